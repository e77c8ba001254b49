"""Stroke styles of unsupervised_seg.demo.simulated_scribbles on the bundled 2 mm sample (CSF < WM < GM)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from unsupervised_seg.demo.simulated_scribbles import STYLES, scribbles_from_truth, slice_positions

EIGHT = np.ones((3, 3), bool)


def counts(scribbles):
    return {k: int((scribbles == k).sum()) for k in (1, 2, 3)}


def used_slices(scribbles):
    return np.flatnonzero((scribbles > 0).any(axis=(0, 1))).tolist()


@pytest.fixture(scope="module")
def sample(mni_2mm):
    volume, mask, truth = mni_2mm
    return truth, mask, volume.spacing, slice_positions(mask, 2, (0.35, 0.5, 0.65))


@pytest.mark.parametrize("style", STYLES)
def test_every_style_strokes_every_class_inside_it_on_the_chosen_slices(sample, style):
    truth, mask, spacing, slices = sample
    scribbles = scribbles_from_truth(truth, mask, spacing, style=style)
    marked = scribbles > 0
    assert scribbles.dtype == np.int32 and scribbles.shape == truth.shape
    assert set(np.unique(scribbles[marked])) == {1, 2, 3}
    assert np.array_equal(scribbles[marked], truth[marked]) and mask[marked].all()
    assert used_slices(scribbles) == slices
    assert np.array_equal(scribbles, scribbles_from_truth(truth, mask, spacing, style=style))  # deterministic


def test_centreline_is_the_default_and_thin(sample):
    truth, mask, spacing, _ = sample
    default = scribbles_from_truth(truth, mask, spacing)
    assert np.array_equal(default, scribbles_from_truth(truth, mask, spacing, style="centreline"))
    assert (default > 0).sum() < 0.01 * mask.sum()
    assert max(counts(default).values()) <= 2 * 3 * 20  # 2 strokes of <= 40 mm (20 voxels) on 3 slices


def test_painted_covers_each_class_region_eroded_by_one_voxel(sample):
    truth, mask, spacing, slices = sample
    scribbles = scribbles_from_truth(truth, mask, spacing, style="painted")
    for z in slices:
        for k in (1, 2, 3):
            region = (truth[:, :, z] == k) & mask[:, :, z]
            assert np.array_equal(scribbles[:, :, z] == k, ndi.binary_erosion(region, EIGHT))
    c = counts(scribbles)
    assert c[2] > 20 * c[1] and c[3] > 10 * c[1]  # class sizes follow the areas (CSF is small)
    assert (scribbles > 0).sum() > 0.3 * (mask[:, :, slices] & (truth[:, :, slices] > 0)).sum()  # regions, not lines
    assert (scribbles > 0).sum() > 10 * (scribbles_from_truth(truth, mask, spacing) > 0).sum()


def test_imbalanced_gives_the_smallest_class_one_short_stroke(sample):
    truth, mask, spacing, slices = sample
    scribbles = scribbles_from_truth(truth, mask, spacing, style="imbalanced", short_mm=10.0, long_mm=120.0)
    c = counts(scribbles)
    assert min(c, key=c.get) == 1  # CSF, the smallest class of the brain
    assert 1 <= c[1] <= 5  # one stroke of <= 10 mm at 2 mm
    assert len(used_slices(np.where(scribbles == 1, 1, 0))) == 1
    pieces, n = ndi.label(scribbles == 1, structure=np.ones((3, 3, 3), bool))
    assert n == 1  # one contiguous stroke
    assert c[2] >= 30 * c[1] and c[3] >= 30 * c[1]
    for k in (2, 3):
        assert used_slices(np.where(scribbles == k, 1, 0)) == slices
        assert c[k] > counts(scribbles_from_truth(truth, mask, spacing))[k]  # longer than the default strokes


def test_sparse_gives_one_class_a_few_dozen_voxels(sample):
    truth, mask, spacing, _ = sample
    default = scribbles_from_truth(truth, mask, spacing)
    sparse = scribbles_from_truth(truth, mask, spacing, style="sparse", sparse_voxels=30)
    assert counts(sparse)[1] == 30  # the smallest class by default
    for k in (2, 3):  # the others as centre lines
        assert np.array_equal(sparse == k, default == k)
    chosen = scribbles_from_truth(truth, mask, spacing, style="sparse", sparse_voxels=25, sparse_class=3)
    assert counts(chosen)[3] == 25 and counts(chosen)[1] == counts(default)[1]


def test_unknown_style_and_class_are_refused(sample):
    truth, mask, spacing, _ = sample
    with pytest.raises(ValueError, match="unknown scribble style"):
        scribbles_from_truth(truth, mask, spacing, style="dots")
    with pytest.raises(ValueError, match="sparse_class 7"):
        scribbles_from_truth(truth, mask, spacing, style="sparse", sparse_class=7)
