"""engine.labels.assign_labels: scribble class k is label k, other clusters by mean intensity, exactly
n_labels by Ward merging of the most similar clusters, and a previous mapping kept.

Small synthetic maps where a unit needs exact values; the bundled MNI152 sample (4 mm) for the real case.
"""

import numpy as np
import pytest

from unsupervised_seg.engine.labels import assign_labels
from unsupervised_seg.engine.preprocess import normalise_intensity


def clusters(*groups):
    """(channel map (N,), intensity (1, N), roi (N,)) from (channel, voxel count, intensity) triples."""
    channel = np.concatenate([np.full(n, c) for c, n, _ in groups])
    intensity = np.concatenate([np.full(n, v, np.float32) for _, n, v in groups])[None]
    return channel, intensity, np.ones(channel.shape, bool)


def test_free_clusters_are_numbered_by_mean_intensity_and_unseen_channels_get_0():
    channel, intensity, roi = clusters((3, 10, 0.9), (5, 10, 0.1), (7, 10, 0.5))
    mapping = assign_labels(channel, intensity, roi, n_clusters=8)
    assert mapping.dtype == np.int32 and mapping.shape == (8,)
    assert mapping.tolist() == [0, 0, 0, 3, 0, 1, 0, 2]


def test_scribble_class_k_is_label_k_whatever_its_intensity():
    # channels 0 and 1 hold scribble classes 1 and 2; class 1 is the brightest, class 2 the darkest
    channel, intensity, roi = clusters((0, 10, 0.95), (1, 10, 0.05), (4, 10, 0.7), (6, 10, 0.3))
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, n_scribble_classes=2)
    assert mapping[0] == 1 and mapping[1] == 2
    assert mapping[6] == 3 and mapping[4] == 4  # the others after the scribble classes, darker first


def test_a_scribble_class_absent_from_the_roi_still_reserves_its_label():
    channel, intensity, roi = clusters((0, 10, 0.5), (5, 10, 0.2))  # class 2 (channel 1) drawn outside the ROI
    mapping = assign_labels(channel, intensity, roi, n_clusters=6, n_scribble_classes=2)
    assert mapping.tolist() == [1, 2, 0, 0, 0, 3]


def test_voxels_outside_the_roi_do_not_count():
    # channel 2: 10 voxels at 0.8 inside the ROI, 10 at 0.0 outside (counted, its mean would be 0.4 < 0.5);
    # channel 4 lies outside the ROI only
    channel, intensity, roi = clusters((2, 10, 0.8), (2, 10, 0.0), (3, 10, 0.5), (4, 10, 0.1))
    roi[10:20] = False
    roi[channel == 4] = False
    mapping = assign_labels(channel, intensity, roi, n_clusters=5)
    assert mapping.tolist() == [0, 0, 2, 1, 0]


def test_exact_n_labels_by_ward_merging_weighs_cluster_sizes():
    """Ward's cost n_i n_j / (n_i + n_j) |m_i - m_j|^2: the 2-voxel cluster at 0.3 joins its neighbour at 0.15
    (cost 0.045) before the two large clusters at 0.1 and 0.15 merge (cost 1.25), though they are nearer."""
    channel, intensity, roi = clusters((0, 1000, 0.1), (1, 1000, 0.15), (2, 2, 0.3), (3, 1000, 0.9))
    assert assign_labels(channel, intensity, roi, n_clusters=4).tolist() == [1, 2, 3, 4]
    mapping = assign_labels(channel, intensity, roi, n_clusters=4, n_labels=3)
    assert mapping.tolist() == [1, 2, 2, 3]
    mapping = assign_labels(channel, intensity, roi, n_clusters=4, n_labels=2)
    assert mapping.tolist() == [1, 1, 1, 2]
    assert assign_labels(channel, intensity, roi, n_clusters=4, n_labels=1).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("n_labels", [1, 2, 3, 4, 5, 6])
def test_merged_labels_are_exactly_1_to_n_labels(n_labels):
    rng = np.random.default_rng(n_labels)
    channel = rng.integers(0, 12, 2000)
    intensity = rng.random((2, 2000)).astype(np.float32)  # two channels: Ward cost on the mean vectors
    mapping = assign_labels(channel, intensity, np.ones(2000, bool), n_clusters=16, n_labels=n_labels)
    assert sorted(set(mapping[np.unique(channel)].tolist())) == list(range(1, n_labels + 1))
    assert not mapping[12:].any()


def test_two_scribble_classes_are_never_merged():
    # classes 1 and 2 have the same mean; the free cluster joins the nearer class and keeps its label
    channel, intensity, roi = clusters((0, 50, 0.4), (1, 50, 0.4), (5, 50, 0.9), (6, 50, 0.45))
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, n_scribble_classes=2, n_labels=2)
    assert mapping[0] == 1 and mapping[1] == 2
    assert {mapping[5], mapping[6]} <= {1, 2}
    # with more scribble classes than n_labels allows, the classes stay apart (merging stops)
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, n_scribble_classes=2, n_labels=1)
    assert mapping[0] == 1 and mapping[1] == 2


def test_previous_mapping_is_kept_and_new_channels_get_new_labels():
    previous = np.array([0, 0, 1, 0, 2, 0, 0, 0], np.int32)  # channels 2 and 4 from an earlier image
    # channel 2 is now the brighter one: known channels keep their labels all the same
    channel, intensity, roi = clusters((2, 10, 0.9), (4, 10, 0.2), (6, 10, 0.5), (7, 10, 0.1))
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, previous=previous)
    assert mapping[2] == 1 and mapping[4] == 2
    assert mapping[7] == 3 and mapping[6] == 4  # new channels: next labels, darker first
    assert previous.tolist() == [0, 0, 1, 0, 2, 0, 0, 0]  # not changed in place
    # at n_labels, a new channel joins the known label nearest in mean intensity
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, n_labels=2, previous=previous)
    assert mapping.tolist() == [0, 0, 1, 0, 2, 0, 2, 2]  # 0.5 and 0.1 are nearer 0.2 than 0.9
    # a previous mapping that covers every channel present is returned unchanged
    mapping = assign_labels(*clusters((2, 10, 0.3), (4, 10, 0.6)), n_clusters=8, previous=previous)
    assert mapping.tolist() == previous.tolist()


@pytest.fixture(scope="module")
def mni(mni_4mm):
    volume, mask, truth = mni_4mm
    return normalise_intensity(volume, mask), mask, truth


@pytest.mark.parametrize("split", [2, 3], ids=["grey_matter_split", "white_matter_split"])
def test_mni_tissues_come_out_csf_gm_wm_and_a_split_tissue_is_merged_back(mni, split):
    """Tissue channels in arbitrary order (CSF -> 7, GM -> 3, WM -> 0) with one tissue split at its median
    intensity into channels 0/3 and 5: four labels by intensity, and at n_labels = 3 exactly the tissues."""
    intensity, mask, truth = mni
    channel = np.choose(truth, [0, 7, 3, 0]).astype(np.int64)
    tissue = mask & (truth == split)
    bright = tissue & (intensity[0] >= np.median(intensity[0][tissue]))
    channel[bright] = 5
    four = assign_labels(channel, intensity, mask, n_clusters=8)
    means = [intensity[0][mask & (four[channel] == k)].mean() for k in (1, 2, 3, 4)]
    assert means == sorted(means)
    three = assign_labels(channel, intensity, mask, n_clusters=8, n_labels=3)
    assert np.array_equal(three[channel][mask], truth[mask])  # CSF 1 < GM 2 < WM 3 on T1
