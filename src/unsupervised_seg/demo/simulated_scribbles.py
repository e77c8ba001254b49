"""Simulated user scribbles made from a ground-truth label map (tests and benchmarks; needs scikit-image).

How the strokes are made (deterministic, no random numbers):
1. Pick ``n_slices`` axial slices (index along ``axis``) evenly spread over the middle of the
   ROI's extent (by default at 35 %, 50 % and 65 % of it).
2. On each slice and for each class, erode the class's 2-D region by ``erode_mm`` millimetres, so
   that a stroke keeps at least that distance from every boundary of the class.
3. Thin the eroded region to its 1-voxel skeleton (scikit-image ``skeletonize``): the centre line
   a user would draw along.
4. Keep the ``strokes_per_class`` longest skeleton pieces (8-connected components) and cut each to
   one contiguous run of at most ``stroke_mm`` millimetres, walking from one end of the piece.

If erosion leaves nothing of a class on a slice, the un-eroded skeleton is used there; a class that
gets no stroke at all raises ValueError. ``corrective_stroke`` draws one more stroke through the largest
error of a segmentation (the "user corrects one class" step of the refinement benchmark).
"""
from __future__ import annotations

from collections import deque
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

_EIGHT = np.ones((3, 3), bool)


def slice_positions(roi: np.ndarray, axis: int, fractions: Sequence[float]) -> list:
    """Indices along ``axis`` at the given fractions of the ROI's extent. roi: (*spatial) bool."""
    others = tuple(a for a in range(roi.ndim) if a != axis)
    present = np.flatnonzero(roi.any(axis=others))
    if present.size == 0:
        raise ValueError("the ROI is empty: no slice to scribble on")
    lo, hi = int(present[0]), int(present[-1])
    return [int(round(lo + f * (hi - lo))) for f in fractions]


def _walk(piece: np.ndarray, length: int) -> np.ndarray:
    """A contiguous run of at most ``length`` pixels of the 2-D skeleton piece, from one of its ends."""
    coords = np.argwhere(piece)
    neighbours = ndi.convolve(piece.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - 1
    ends = [tuple(c) for c in coords if neighbours[tuple(c)] <= 1]
    start = min(ends) if ends else tuple(coords[0])
    seen, order, queue = {start}, [], deque([start])
    while queue and len(order) < length:  # breadth-first walk along the centre line
        y, x = queue.popleft()
        order.append((y, x))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt = (y + dy, x + dx)
                if nxt not in seen and 0 <= nxt[0] < piece.shape[0] and 0 <= nxt[1] < piece.shape[1] and piece[nxt]:
                    seen.add(nxt)
                    queue.append(nxt)
    out = np.zeros_like(piece)
    out[tuple(np.array(order).T)] = True
    return out


def _class_strokes(region: np.ndarray, erode_px: Tuple[int, int], n_strokes: int, length: int) -> np.ndarray:
    """(H, W) bool strokes inside the 2-D class region (see module docstring, steps 2-4)."""
    structure = np.ones((2 * erode_px[0] + 1, 2 * erode_px[1] + 1), bool)
    core = ndi.binary_erosion(region, structure) if max(erode_px) > 0 else region
    if not core.any():
        core = region
    skeleton = skeletonize(core)
    pieces, n = ndi.label(skeleton, structure=_EIGHT)
    if n == 0:
        return np.zeros_like(region)
    sizes = ndi.sum_labels(skeleton, pieces, index=np.arange(1, n + 1))
    strokes = np.zeros_like(region)
    for index in np.argsort(-sizes, kind="stable")[:n_strokes]:
        strokes |= _walk(pieces == index + 1, length)
    return strokes


def scribbles_from_truth(truth: np.ndarray, roi: np.ndarray, spacing: Sequence[float], axis: int = 2,
                         fractions: Sequence[float] = (0.35, 0.5, 0.65), erode_mm: float = 2.0,
                         strokes_per_class: int = 2, stroke_mm: float = 40.0) -> np.ndarray:
    """Thin strokes for every class of ``truth`` on a few slices across ``axis``.

    truth: (X, Y, Z) int, 0 = background, 1..K classes; roi: (X, Y, Z) bool; spacing in mm per axis.
    Returns (X, Y, Z) int32: 0 = unlabelled, k = a stroke of class k (always inside class k's truth).
    """
    truth = np.asarray(truth)
    scribbles = np.zeros(truth.shape, np.int32)
    for index in slice_positions(roi, axis, fractions):
        _add_slice(scribbles, truth, roi, spacing, axis, index, erode_mm, strokes_per_class, stroke_mm)
    classes = np.unique(truth[roi & (truth > 0)])
    missing = sorted(set(classes.tolist()) - set(np.unique(scribbles).tolist()))
    if missing:
        raise ValueError(f"no scribble could be made for class(es) {missing} on the chosen slices")
    return scribbles


def corrective_stroke(scribbles: np.ndarray, truth: np.ndarray, labels: np.ndarray, roi: np.ndarray,
                      spacing: Sequence[float], class_id: int, axis: int = 2, stroke_mm: float = 40.0) -> np.ndarray:
    """A copy of ``scribbles`` (X, Y, Z) with one stroke of ``class_id`` where a segmentation got it wrong.

    The stroke is the centre line (skeleton, at most ``stroke_mm`` long) of the largest 2-D region, over
    all slices across ``axis``, of voxels that are ``class_id`` in ``truth`` but not in ``labels``: what a
    user draws through the biggest visible error. Raises ValueError when ``labels`` has no such error.
    """
    errors = (np.asarray(truth) == class_id) & (np.asarray(labels) != class_id) & roi
    best, best_size = None, 0
    for index in range(errors.shape[axis]):
        pieces, n = ndi.label(np.take(errors, index, axis))
        if n:
            sizes = ndi.sum_labels(pieces > 0, pieces, index=np.arange(1, n + 1))
            if sizes.max() > best_size:
                best, best_size = (index, pieces == 1 + int(np.argmax(sizes))), sizes.max()
    if best is None:
        raise ValueError(f"the segmentation has no error of class {class_id} to correct")
    index, region = best
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    stroke = _class_strokes(region, (0, 0), 1, max(int(round(stroke_mm / min(in_plane))), 1))
    out = scribbles.copy()
    plane = np.moveaxis(out, axis, 0)[index]  # a view into ``out``
    plane[stroke & (plane == 0)] = class_id
    return out


def _add_slice(scribbles, truth, roi, spacing, axis, index, erode_mm, n_strokes, stroke_mm):
    """Write strokes of every class on one slice of ``scribbles`` in place."""
    take = [slice(None)] * truth.ndim
    take[axis] = index
    take = tuple(take)
    plane_truth = np.where(roi[take], truth[take], 0)
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    erode_px = tuple(int(round(erode_mm / s)) for s in in_plane)
    length = max(int(round(stroke_mm / min(in_plane))), 1)
    plane = scribbles[take]
    for k in [int(c) for c in np.unique(plane_truth) if c > 0]:
        strokes = _class_strokes(plane_truth == k, erode_px, n_strokes, length)
        plane[strokes & (plane == 0)] = k
