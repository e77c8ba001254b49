"""Segmentation quality with one-to-one (Hungarian) matching of clusters to classes."""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment


def dice_matrix(labels: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None):
    """Dice of every (cluster, class) pair over the voxels in ``mask``.

    labels, truth: integer arrays of one shape; 0 counts as a label/class like any other unless
    excluded by ``mask``. Returns (dice (n_clusters, n_classes), cluster ids, class ids).
    """
    if labels.shape != truth.shape:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} differ in shape")
    if mask is not None:
        labels, truth = labels[mask], truth[mask]
    clusters, lab_idx = np.unique(labels.ravel(), return_inverse=True)
    classes, tru_idx = np.unique(truth.ravel(), return_inverse=True)
    joint = np.zeros((len(clusters), len(classes)), np.int64)
    np.add.at(joint, (lab_idx, tru_idx), 1)
    sizes = joint.sum(1)[:, None] + joint.sum(0)[None, :]
    return 2.0 * joint / np.maximum(sizes, 1), clusters, classes


def hungarian_dice(labels: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> dict:
    """Match clusters to classes one-to-one (maximum total Dice) and report per-class Dice.

    Unmatched classes (fewer clusters than classes) score 0; unmatched clusters are not rewarded.
    Returns {"mean": mean Dice over classes, "per_class": {class: dice}, "matching": {class: cluster}}.
    """
    dice, clusters, classes = dice_matrix(labels, truth, mask)
    rows, cols = linear_sum_assignment(-dice)
    per_class = {int(c): 0.0 for c in classes}
    matching = {}
    for r, c in zip(rows, cols):
        per_class[int(classes[c])] = float(dice[r, c])
        matching[int(classes[c])] = int(clusters[r])
    return {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class, "matching": matching}
