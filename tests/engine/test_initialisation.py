"""engine.initialisation.initial_channels: k-means / Gaussian-mixture clusters of the intensities as channel ids,
ordered by mean intensity, with scribble class k on channel k - 1.

Three clearly separated intensity populations where exact channels are known; the bundled MNI152 sample (4 mm)
for the real case.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from unsupervised_seg import Volume
from unsupervised_seg.demo.metrics import hungarian_dice
from unsupervised_seg.demo.simulated_scribbles import scribbles_from_truth
from unsupervised_seg.engine.initialisation import initial_channels
from unsupervised_seg.engine.preprocess import normalise_intensity

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import devset  # noqa: E402

METHODS = ["kmeans", "gmm"]


@pytest.fixture(scope="module")
def populations():
    """(image (1, 12, 12, 12), population 0/1/2 of each voxel, ROI): intensities 0.1, 0.5 and 0.9 (sd 0.02) in a
    random layout; the ROI leaves a one-voxel frame outside."""
    rng = np.random.default_rng(0)
    population = rng.integers(0, 3, (12, 12, 12))
    image = (np.array([0.1, 0.5, 0.9])[population] + rng.normal(0, 0.02, population.shape))[None].astype(np.float32)
    roi = np.zeros(population.shape, bool)
    roi[1:11, 1:11, 1:11] = True
    return image, population, roi


@pytest.mark.parametrize("method", METHODS)
def test_separated_populations_become_channels_in_intensity_order(method, populations):
    image, population, roi = populations
    channels = initial_channels(method, image, roi, n_clusters=3, seed=0)
    assert channels.shape == roi.shape and channels.dtype == np.int64
    assert np.array_equal(channels[roi], population[roi])  # 0.1 -> channel 0, 0.5 -> 1, 0.9 -> 2
    assert not channels[~roi].any()


@pytest.mark.parametrize("method", METHODS)
def test_scribble_class_k_ends_on_channel_k_minus_1(method, populations):
    image, population, roi = populations
    scribbles = np.zeros(roi.shape, np.int64)
    scribbles[5][population[5] == 2] = 1  # class 1: strokes in the brightest population
    scribbles[6][population[6] == 0] = 2  # class 2: in the darkest
    scribbles[~roi] = 0
    channels = initial_channels(method, image, roi, n_clusters=3, scribbles=scribbles, n_scribble_classes=2, seed=0)
    expected = np.array([1, 2, 0])[population]  # 0.9 -> channel 0, 0.1 -> channel 1, the rest after them
    assert np.array_equal(channels[roi], expected[roi])


def test_scribble_classes_get_channels_even_when_there_are_fewer_clusters(populations):
    image, population, roi = populations
    scribbles = np.zeros(roi.shape, np.int64)
    for k, p in [(1, 1), (2, 2), (3, 0)]:  # three classes, one per population
        scribbles[4 + k][population[4 + k] == p] = k
    scribbles[~roi] = 0
    channels = initial_channels("kmeans", image, roi, n_clusters=2, scribbles=scribbles, n_scribble_classes=3)
    assert np.array_equal(channels[roi], np.array([2, 0, 1])[population][roi])


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_channels(method, populations):
    image, population, roi = populations
    noisy = image + np.random.default_rng(1).normal(0, 0.2, image.shape).astype(np.float32)  # overlapping now
    first = initial_channels(method, noisy, roi, n_clusters=4, seed=3)
    assert np.array_equal(first, initial_channels(method, noisy, roi, n_clusters=4, seed=3))


@pytest.fixture(scope="module")
def mni(mni_4mm):
    volume, mask, truth = mni_4mm
    return normalise_intensity(volume, mask), mask, truth, volume.spacing


@pytest.mark.parametrize("method, dice", [("kmeans", 0.84), ("gmm", 0.86)])
def test_mni_tissues_on_channels_csf_gm_wm(method, dice, mni):
    """On the T1 the darkest cluster is CSF, then grey, then white matter: channel k - 1 is tissue k, no matching."""
    image, mask, truth, _ = mni
    channels = initial_channels(method, image, mask, n_clusters=3, seed=0)
    score = hungarian_dice(channels + 1, truth, mask)
    assert score["matching"] == {1: 1, 2: 2, 3: 3} and score["mean"] >= dice, score  # 0.854 and 0.878


def test_mni_scribbles_name_the_channels(mni):
    """Strokes with class 1 = white matter, 2 = CSF, 3 = grey matter (not intensity order): the clusters follow."""
    image, mask, truth, spacing = mni
    class_of_tissue = np.array([0, 2, 3, 1])
    scribbles = class_of_tissue[scribbles_from_truth(truth, mask, spacing)]
    channels = initial_channels("gmm", image, mask, n_clusters=3, scribbles=scribbles, n_scribble_classes=3)
    score = hungarian_dice(channels + 1, class_of_tissue[truth], mask)
    assert score["matching"] == {1: 1, 2: 2, 3: 3} and score["mean"] >= 0.86, score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_finds_the_chest_ct_bone_whatever_the_seed(seed):
    """Three k-means++ starts fell into a worse optimum at seed 1 on the development set's chest CT (air split in
    two, bone merged with soft tissue: the network then never found the bone, Dice 0.65); ten starts find the
    best one at every seed."""
    case = devset.load("chestct")
    ct = Volume(case.image[None], case.spacing, case.affine)
    channels = initial_channels("kmeans", normalise_intensity(ct, case.mask), case.mask, 3, seed=seed)
    bone = hungarian_dice(channels, case.truth, case.roi)["per_class"][3]
    assert bone > 0.6, bone
