"""Initial clustering that the network is first fitted to, before self-training on its own argmax.

Random initial weights give argmax clusters that mix tissues, and self-training cannot separate
them again (DESIGN.md, "Pitfalls"). Starting from k-means on intensity gives the network pure
clusters to refine.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

_MAX_SAMPLES = 200_000  # voxels k-means is fitted on (all voxels are then assigned)


def kmeans_channels(image: np.ndarray, roi: np.ndarray, n_clusters: int, scribbles: Optional[np.ndarray] = None,
                    n_scribble_classes: int = 0, seed: int = 0) -> np.ndarray:
    """k-means on voxel intensities inside the ROI, as response-channel ids.

    image: (C, *spatial) normalised intensities; roi: (*spatial) bool; scribbles: (*spatial) int or None.
    The cluster holding most of scribble class k becomes channel k - 1 (one-to-one), the others
    take the channels after the scribble classes. Returns (*spatial) int64, 0 outside the ROI.
    """
    n_clusters = max(n_clusters, n_scribble_classes)
    features = image[:, roi].T  # (N, C)
    rng = np.random.default_rng(seed)
    fit_on = features if len(features) <= _MAX_SAMPLES else features[rng.choice(len(features), _MAX_SAMPLES, False)]
    kmeans = KMeans(n_clusters, n_init=3, random_state=seed).fit(fit_on)
    clusters = kmeans.predict(features)
    order = np.argsort(kmeans.cluster_centers_.sum(1))  # stable: by mean intensity
    channel_of_cluster = np.empty(n_clusters, np.int64)
    if n_scribble_classes and scribbles is not None:
        marked = scribbles[roi]
        overlap = np.zeros((n_clusters, n_scribble_classes))
        np.add.at(overlap, (clusters[marked > 0], marked[marked > 0] - 1), 1)
        rows, cols = linear_sum_assignment(-overlap)
        channel_of_cluster[rows] = cols
        free = [c for c in order if c not in set(rows)]
    else:
        free = list(order)
    channel_of_cluster[free] = np.arange(n_scribble_classes, n_scribble_classes + len(free))
    channels = np.zeros(roi.shape, np.int64)
    channels[roi] = channel_of_cluster[clusters]
    return channels
