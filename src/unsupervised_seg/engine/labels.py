"""From response channels to output labels: scribble classes first, merging, stable order."""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np


def _channel_means(channel_labels: np.ndarray, intensity: np.ndarray, roi: np.ndarray):
    """Per present channel: ids (n,), voxel counts (n,), mean intensity vectors (n, C)."""
    channels = channel_labels[roi]
    counts = np.bincount(channels)
    sums = np.stack([np.bincount(channels, weights=values[roi], minlength=len(counts)) for values in intensity], 1)
    present = np.flatnonzero(counts)
    return present, counts[present], sums[present] / counts[present, None]


def assign_labels(
    channel_labels: np.ndarray,
    intensity: np.ndarray,
    roi: np.ndarray,
    n_clusters: int,
    n_scribble_classes: int = 0,
    n_labels: Optional[int] = None,
    previous: Optional[np.ndarray] = None,
    min_fraction: float = 0.0,
) -> np.ndarray:
    """Map every response channel to an output label.

    channel_labels: (*spatial) argmax channel ids; intensity: (C, *spatial) normalised image;
    roi: (*spatial) bool. Scribble class k (channel k - 1) becomes label k. Other clusters get
    labels after the scribble classes in order of mean intensity. A cluster (not a scribble class)
    holding fewer than ``min_fraction`` of the ROI voxels first joins the cluster or scribble class of
    nearest mean intensity among those at least that large. With ``n_labels`` = K the most similar
    clusters (Ward cost on mean intensity) are then merged until K labels remain; two scribble classes
    are never merged. With ``previous`` (a mapping from an earlier image) known channels keep their label
    and new channels get new labels (or, when K labels exist or the channel is below ``min_fraction``,
    the nearest known one).

    Returns (n_clusters,) int32: the label of each channel, 0 for channels never seen.
    """
    present, counts, means = _channel_means(channel_labels, intensity, roi)
    smallest = min_fraction * float(counts.sum())
    if previous is not None:
        return _extend(previous, present, counts, means, n_labels, smallest)
    # groups: [channels, size, mean, fixed label or None]
    groups: List[Any] = [[[k - 1], 0, None, k] for k in range(1, n_scribble_classes + 1)]
    for channel, size, mean in zip(present, counts, means):
        if channel < n_scribble_classes:
            groups[channel][1:3] = [size, mean]
        else:
            groups.append([[channel], size, mean, None])
    groups = _absorb_tiny(groups, smallest)
    while n_labels is not None and len(groups) > n_labels:
        best = _cheapest_merge(groups)
        if best is None:
            break
        groups = _merge(groups, *best)
    mapping = np.zeros(n_clusters, np.int32)
    fixed = [g for g in groups if g[3] is not None]
    free = sorted((g for g in groups if g[3] is None), key=lambda g: tuple(g[2]))
    for group in fixed:
        mapping[group[0]] = group[3]
    for label, group in enumerate(free, start=n_scribble_classes + 1):
        mapping[group[0]] = label
    return mapping


def _absorb_tiny(groups: list, smallest: float) -> list:
    """Groups (not scribble classes) of fewer than ``smallest`` voxels join the group with the nearest mean
    intensity among those that are at least that large (so strays never pile up into a cluster of their own)."""
    tiny = [g for g in groups if g[3] is None and 0 < g[1] < smallest]
    kept = [g for g in groups if g[1] > 0 and not any(g is t for t in tiny)]
    if not tiny or not kept:
        return groups
    joined: dict = {}
    for g in tiny:
        target = min(range(len(kept)), key=lambda k: float(np.sum((kept[k][2] - g[2]) ** 2)))
        joined.setdefault(target, []).append(g)
    result = [g for g in groups if g[1] == 0]
    for k, g in enumerate(kept):
        for small in joined.get(k, []):
            size = g[1] + small[1]
            g = [g[0] + small[0], size, (g[1] * g[2] + small[1] * small[2]) / size, g[3]]
        result.append(g)
    return result


def _cheapest_merge(groups: list):
    """(i, j) of the two groups with the lowest Ward cost, never two scribble classes nor an empty group;
    None if no pair qualifies."""
    best = None
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            (_, ni, mi, fi), (_, nj, mj, fj) = groups[i], groups[j]
            if (fi is not None and fj is not None) or ni == 0 or nj == 0:
                continue
            cost = ni * nj / (ni + nj) * float(np.sum((mi - mj) ** 2))
            if best is None or cost < best[0]:
                best = (cost, i, j)
    return None if best is None else best[1:]


def _merge(groups: list, i: int, j: int) -> list:
    """``groups`` with groups i and j replaced by their union (size-weighted mean, the fixed label if any)."""
    gi, gj = groups[i], groups[j]
    size = gi[1] + gj[1]
    merged = [gi[0] + gj[0], size, (gi[1] * gi[2] + gj[1] * gj[2]) / size, gi[3] if gi[3] is not None else gj[3]]
    return [g for k, g in enumerate(groups) if k not in (i, j)] + [merged]


def _extend(previous: np.ndarray, present, counts, means, n_labels: Optional[int], smallest: float = 0.0) -> np.ndarray:
    """Keep ``previous`` labels; give channels it has not seen a label (see assign_labels)."""
    mapping = previous.copy()
    new = [i for i, c in enumerate(present) if mapping[c] == 0]
    if not new:
        return mapping
    known = [i for i, c in enumerate(present) if mapping[c] != 0]
    next_label = int(mapping.max()) + 1
    for i in sorted(new, key=lambda i: tuple(means[i])):
        if known and ((n_labels is not None and next_label > n_labels) or counts[i] < smallest):
            nearest = min(known, key=lambda k: float(np.sum((means[k] - means[i]) ** 2)))
            mapping[present[i]] = mapping[present[nearest]]
        else:
            mapping[present[i]] = next_label
            next_label += 1
    return mapping
