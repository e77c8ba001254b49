"""Clusters of a few stray voxels join the most similar cluster (SegmentationConfig.min_cluster_fraction, engine
labels.assign_labels), and the config's messages for bad label counts.

Scribbled runs on the bundled sample left 6-34 voxel "Cluster k" segments beside the three tissues (2 mm,
235 375 ROI voxels: at most 0.015 % of the ROI); the default merges clusters below 0.1 %.
"""

import numpy as np
import pytest

from unsupervised_seg import InputError, SegmentationConfig
from unsupervised_seg.engine.labels import assign_labels


def clusters(*groups):
    """(channel map (N,), intensity (1, N), roi (N,)) from (channel, voxel count, intensity) triples."""
    channel = np.concatenate([np.full(n, c) for c, n, _ in groups])
    intensity = np.concatenate([np.full(n, v, np.float32) for _, n, v in groups])[None]
    return channel, intensity, np.ones(channel.shape, bool)


def test_tiny_clusters_join_the_most_similar_one_and_labels_stay_1_to_k():
    # 3 tissues of 10 000 voxels, and strays of 4, 13 and 29 voxels (< 0.1 % of 30 046) near one tissue each
    channel, intensity, roi = clusters(
        (0, 10_000, 0.2), (1, 10_000, 0.5), (2, 10_000, 0.8), (5, 4, 0.21), (6, 13, 0.55), (7, 29, 0.9)
    )
    kept = assign_labels(channel, intensity, roi, n_clusters=8, min_fraction=0.0)
    assert sorted(set(kept[np.unique(channel)])) == [1, 2, 3, 4, 5, 6]  # before: 6 labels
    merged = assign_labels(channel, intensity, roi, n_clusters=8, min_fraction=0.001)
    assert merged[[0, 1, 2]].tolist() == [1, 2, 3]
    assert merged[[5, 6, 7]].tolist() == [1, 2, 3]  # each stray joined its nearest tissue
    # a cluster at the threshold or above stays
    channel, intensity, roi = clusters((0, 1000, 0.2), (1, 1000, 0.8), (2, 10, 0.5))
    assert len(set(assign_labels(channel, intensity, roi, n_clusters=4, min_fraction=0.0049)[:3])) == 3
    assert len(set(assign_labels(channel, intensity, roi, n_clusters=4, min_fraction=0.0051)[:3])) == 2


def test_a_tiny_cluster_may_join_a_scribble_class_but_a_small_scribble_class_is_kept():
    # channels 0, 1: scribble classes 1 and 2; class 2 is tiny (5 voxels) but was drawn: it stays
    channel, intensity, roi = clusters((0, 5000, 0.3), (1, 5, 0.9), (4, 5000, 0.6), (6, 8, 0.31))
    mapping = assign_labels(channel, intensity, roi, n_clusters=8, n_scribble_classes=2, min_fraction=0.01)
    assert mapping[[0, 1, 4, 6]].tolist() == [1, 2, 3, 1]


def test_merging_small_clusters_comes_before_exact_n_labels():
    channel, intensity, roi = clusters((0, 1000, 0.1), (1, 1000, 0.5), (2, 1000, 0.9), (3, 2, 0.95))
    mapping = assign_labels(channel, intensity, roi, n_clusters=4, n_labels=3, min_fraction=0.001)
    assert mapping.tolist() == [1, 2, 3, 3]


def test_a_previous_mapping_gives_tiny_new_clusters_the_nearest_known_label():
    previous = np.array([1, 2, 0, 0, 0], np.int32)
    channel, intensity, roi = clusters((0, 1000, 0.2), (1, 1000, 0.8), (3, 3, 0.75), (4, 500, 0.5))
    mapping = assign_labels(channel, intensity, roi, n_clusters=5, previous=previous, min_fraction=0.01)
    assert mapping.tolist() == [1, 2, 0, 2, 3]  # the 3-voxel newcomer joins label 2, the large one is new


def test_min_cluster_fraction_default_and_checks():
    assert SegmentationConfig().min_cluster_fraction == 0.001
    assert SegmentationConfig(min_cluster_fraction=0).min_cluster_fraction == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="min_cluster_fraction"):
            SegmentationConfig(min_cluster_fraction=bad)


def test_n_labels_messages_name_the_real_bound():
    with pytest.raises(InputError) as info:
        SegmentationConfig(n_labels=0)
    assert str(info.value) == "n_labels must be >= 1, got 0"  # was "between 1 and n_clusters (None)"
    with pytest.raises(InputError, match=r"at most n_clusters \(8\), got 9"):
        SegmentationConfig(n_clusters=8, n_labels=9)
    with pytest.raises(InputError, match="at most 255, got 300"):
        SegmentationConfig(n_labels=300)


def test_strays_do_not_pile_up_into_a_cluster_of_their_own():
    # two strays of 15 voxels (each < 1 % of 2030, together above it) of like intensity, between two tissues
    channel, intensity, roi = clusters((0, 1000, 0.1), (1, 1000, 0.9), (2, 15, 0.45), (3, 15, 0.47))
    mapping = assign_labels(channel, intensity, roi, n_clusters=4, min_fraction=0.01)
    assert mapping.tolist() == [1, 2, 1, 1]
