"""Initial clustering that the network is first fitted to, before self-training on its own argmax.

Random initial weights give argmax clusters that mix tissues, and self-training cannot separate
them again (MNI152 4 mm: Dice 0.41-0.49 against 0.88-0.89 with this start). Starting from a clustering of the intensities (k-means or a
Gaussian mixture) gives the network pure clusters to refine; scribbles name the clusters.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

_MAX_SAMPLES = 200_000  # voxels the clustering is fitted on (all voxels are then assigned)
# "auto" keeps the mixture only while it leaves at most this much more intensity variance unexplained than k-means
# (which minimises it): on a whole head the mixture spends a broad component on scalp and bone and merges grey with
# white matter (Colin27 without a mask: 1.25-1.34 times k-means', Dice 0.42 against 0.82), where it wins (MR
# brains) it is within 1.13 times (development set, benchmarks/RESULTS.md)
_MAX_UNEXPLAINED_RATIO = 1.2
# k-means++ starts: 3 fell into a worse optimum at some seeds where one class is small (chest CT bone, 2 % of the
# body: air split in two and bone merged with soft tissue at seed 1, Dice 0.65 instead of 0.90); 10 (scikit-learn's
# classic default) found the best optimum at seeds 0-5 on every development volume (MNI152 2 mm: the same result in
# the same ~16 s)
_KMEANS_STARTS = 10


def _cluster(method: str, n_clusters: int, fit_on: np.ndarray, features: np.ndarray, seed: int):
    """(cluster id (N,), centres (K, C)) of ``features`` (N, C) by k-means or a Gaussian mixture fitted on ``fit_on``."""
    if method == "gmm":
        model = GaussianMixture(n_clusters, covariance_type="full", reg_covar=1e-4, n_init=2, random_state=seed)
        centres = model.fit(fit_on).means_
    else:
        model = KMeans(n_clusters, n_init=_KMEANS_STARTS, random_state=seed).fit(fit_on)
        centres = model.cluster_centers_
    return model.predict(features), centres


def _on_grid(values: np.ndarray, roi: np.ndarray) -> np.ndarray:
    grid = np.zeros(roi.shape, np.int64)
    grid[roi] = values + 1
    return grid


def unexplained_variance(features: np.ndarray, clusters: np.ndarray) -> float:
    """Share of the variance of ``features`` (N, C) left within the clusters (N,): 0 when they separate perfectly."""
    centred = features - features.mean(0)
    total = float((centred**2).sum())
    within = sum(
        float(((features[clusters == k] - features[clusters == k].mean(0)) ** 2).sum()) for k in np.unique(clusters)
    )
    return within / max(total, 1e-12)


def _auto_choice(kmeans, gmm, features: np.ndarray, roi: np.ndarray):
    """The mixture's (clusters, centres) when it is more coherent and explains the intensities nearly as well."""
    coherent = label_changes(_on_grid(gmm[0], roi), roi) < label_changes(_on_grid(kmeans[0], roi), roi)
    explains = unexplained_variance(features, gmm[0]) <= _MAX_UNEXPLAINED_RATIO * unexplained_variance(
        features, kmeans[0]
    )
    return gmm if coherent and explains else kmeans


def label_changes(labels: np.ndarray, roi: np.ndarray) -> float:
    """Share of neighbouring ROI voxel pairs (along every axis) whose labels differ: lower is more coherent."""
    changed = pairs = 0
    for axis in range(labels.ndim):
        head = tuple(slice(1, None) if a == axis else slice(None) for a in range(labels.ndim))
        tail = tuple(slice(None, -1) if a == axis else slice(None) for a in range(labels.ndim))
        both = roi[head] & roi[tail]
        changed += int(np.count_nonzero((labels[head] != labels[tail]) & both))
        pairs += int(np.count_nonzero(both))
    return changed / max(pairs, 1)


def initial_channels(
    method: str,
    image: np.ndarray,
    roi: np.ndarray,
    n_clusters: int,
    scribbles: Optional[np.ndarray] = None,
    n_scribble_classes: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Cluster voxel intensities inside the ROI and return response-channel ids.

    method: "kmeans", "gmm", or "auto": both, keeping the mixture where its labels change less between
    neighbouring voxels (the method's own spatial-continuity principle) and it leaves at most 1.2 times the
    intensity variance k-means leaves unexplained; on the development set this picked the better of the two on
    every volume: the mixture on MR brains, k-means on CT, whose heavy-tailed HU histograms the mixture splits
    badly, and on a whole head, where it spends a component on scalp and bone (see benchmarks/RESULTS.md).

    image: (C, *spatial) normalised intensities; roi: (*spatial) bool; scribbles: (*spatial) int or None.
    The cluster holding most of scribble class k becomes channel k - 1 (one-to-one), the others take
    the channels after the scribble classes in order of mean intensity. (Seeding the mixture with
    the scribbles' statistics was tried: strokes drawn in pure tissue, e.g. CSF in the ventricles,
    bias it, and MNI152 2 mm Dice fell from 0.894 to 0.801.)
    Returns (*spatial) int64, 0 outside the ROI.
    """
    n_clusters = max(n_clusters, n_scribble_classes)
    features = image[:, roi].T.astype(np.float64)  # (N, C)
    rng = np.random.default_rng(seed)
    fit_on = features if len(features) <= _MAX_SAMPLES else features[rng.choice(len(features), _MAX_SAMPLES, False)]
    marked = scribbles[roi] if n_scribble_classes and scribbles is not None else None
    if method == "auto":
        kmeans, gmm = (_cluster(name, n_clusters, fit_on, features, seed) for name in ("kmeans", "gmm"))
        clusters, centres = _auto_choice(kmeans, gmm, features, roi)
    else:
        clusters, centres = _cluster(method, n_clusters, fit_on, features, seed)
    order = np.argsort(centres.sum(1), kind="stable")  # stable: by mean intensity
    channel_of_cluster = np.empty(n_clusters, np.int64)
    if marked is not None:
        overlap = np.zeros((n_clusters, n_scribble_classes))
        np.add.at(overlap, (clusters[marked > 0], marked[marked > 0] - 1), 1)
        rows, cols = linear_sum_assignment(-overlap)
        channel_of_cluster[rows] = cols
        free = [c for c in order if c not in set(rows.tolist())]
    else:
        free = list(order)
    channel_of_cluster[free] = np.arange(n_scribble_classes, n_scribble_classes + len(free))
    channels = np.zeros(roi.shape, np.int64)
    channels[roi] = channel_of_cluster[clusters]
    return channels
