"""Simulated user scribbles made from a ground-truth label map (tests and benchmarks; needs scikit-image).

Four ways a user draws, chosen by ``style`` (deterministic, no random numbers). All of them work on a
few slices across ``axis`` (by default three, at 35 %, 50 % and 65 % of the ROI's extent), and every
stroked voxel lies inside its class.

- ``"centreline"`` (the default): thin strokes along the middle of each class.
  1. On each slice and for each class, erode the class's 2-D region by ``erode_mm`` millimetres, so
     that a stroke keeps at least that distance from every boundary of the class.
  2. Thin the eroded region to its 1-voxel skeleton (scikit-image ``skeletonize``): the centre line
     a user would draw along.
  3. Keep the ``strokes_per_class`` longest skeleton pieces (8-connected components) and cut each to
     one contiguous run of at most ``stroke_mm`` millimetres, walking from one end of the piece.
  If erosion leaves nothing of a class on a slice, the un-eroded skeleton is used there.
- ``"painted"``: a large brush over whole class regions: on each slice, every class's whole 2-D region
  eroded by one voxel (3 x 3 in-plane), so class sizes in the strokes follow the classes' areas (20x
  apart on a brain). Where erosion leaves nothing of a class on a slice, its un-eroded region is used.
- ``"imbalanced"``: the smallest class of the ROI (fewest voxels) gets one short centre-line stroke
  (at most ``short_mm``) on one slice (the one where its longest centre line is longest; the middle one
  on a tie);
  every other class gets ``strokes_per_class`` long strokes (at most ``long_mm``) on every slice.
- ``"sparse"``: centre-line strokes as ``"centreline"``, except one class (``sparse_class``, by default
  the smallest) that gets only ``sparse_voxels`` stroked voxels (a few dozen): its centre line walked
  from one end on the middle slice, continued on the other slices' centre lines when that is too short,
  then on the centre lines of the un-eroded class (so fewer only where the class's skeletons hold fewer).

A class that gets no stroke at all raises ValueError. ``corrective_stroke`` draws one more stroke
through the largest error of a segmentation (the "user corrects one class" step of the refinement
benchmark).
"""

from __future__ import annotations

from collections import deque
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

STYLES = ("centreline", "painted", "imbalanced", "sparse")
_EIGHT = np.ones((3, 3), bool)


def slice_positions(roi: np.ndarray, axis: int, fractions: Sequence[float]) -> list:
    """Indices along ``axis`` at the given fractions of the ROI's extent. roi: (*spatial) bool."""
    others = tuple(a for a in range(roi.ndim) if a != axis)
    present = np.flatnonzero(roi.any(axis=others))
    if present.size == 0:
        raise ValueError("the ROI is empty: no slice to scribble on")
    lo, hi = int(present[0]), int(present[-1])
    return [int(round(lo + f * (hi - lo))) for f in fractions]


def _walk_order(piece: np.ndarray, length: int) -> list:
    """(y, x) pixels of a contiguous run of at most ``length`` pixels of the 2-D skeleton piece, in walking
    order from one of its ends."""
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
    return order


def _walk(piece: np.ndarray, length: int) -> np.ndarray:
    """A contiguous run of at most ``length`` pixels of the 2-D skeleton piece, from one of its ends."""
    out = np.zeros_like(piece)
    order = _walk_order(piece, length)
    if order:
        out[tuple(np.array(order).T)] = True
    return out


def _skeleton_pieces(region: np.ndarray, erode_px: Tuple[int, int]) -> list:
    """The 8-connected pieces of the skeleton of ``region`` eroded by ``erode_px``, longest first."""
    structure = np.ones((2 * erode_px[0] + 1, 2 * erode_px[1] + 1), bool)
    core = ndi.binary_erosion(region, structure) if max(erode_px) > 0 else region
    if not core.any():
        core = region
    skeleton = skeletonize(core)
    pieces, n = ndi.label(skeleton, structure=_EIGHT)
    if n == 0:
        return []
    sizes = ndi.sum_labels(skeleton, pieces, index=np.arange(1, n + 1))
    return [pieces == index + 1 for index in np.argsort(-sizes, kind="stable")]


def _class_strokes(region: np.ndarray, erode_px: Tuple[int, int], n_strokes: int, length: int) -> np.ndarray:
    """(H, W) bool centre-line strokes inside the 2-D class region (see the module docstring)."""
    strokes = np.zeros_like(region)
    for piece in _skeleton_pieces(region, erode_px)[:n_strokes]:
        strokes |= _walk(piece, length)
    return strokes


def _painted(region: np.ndarray) -> np.ndarray:
    """(H, W) bool: the 2-D region eroded by one voxel (3 x 3), or the region itself where that leaves nothing."""
    core = ndi.binary_erosion(region, _EIGHT)
    return core if core.any() else region


def _plane(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A writable view of slice ``index`` across ``axis``."""
    return np.moveaxis(array, axis, 0)[index]


def scribbles_from_truth(
    truth: np.ndarray,
    roi: np.ndarray,
    spacing: Sequence[float],
    axis: int = 2,
    fractions: Sequence[float] = (0.35, 0.5, 0.65),
    erode_mm: float = 2.0,
    strokes_per_class: int = 2,
    stroke_mm: float = 40.0,
    style: str = "centreline",
    short_mm: float = 10.0,
    long_mm: float = 120.0,
    sparse_voxels: int = 30,
    sparse_class: Optional[int] = None,
) -> np.ndarray:
    """Strokes for every class of ``truth`` on a few slices across ``axis``, drawn in ``style`` (see STYLES
    and the module docstring).

    truth: (X, Y, Z) int, 0 = background, 1..K classes; roi: (X, Y, Z) bool; spacing in mm per axis.
    Returns (X, Y, Z) int32: 0 = unlabelled, k = a stroke of class k (always inside class k's truth and the ROI).
    """
    if style not in STYLES:
        raise ValueError(f"unknown scribble style {style!r}: expected one of {', '.join(STYLES)}")
    truth = np.asarray(truth)
    roi = np.asarray(roi, bool)
    scribbles = np.zeros(truth.shape, np.int32)
    slices = slice_positions(roi, axis, fractions)
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    erode_px = tuple(int(round(erode_mm / s)) for s in in_plane)
    px = lambda mm: max(int(round(mm / min(in_plane))), 1)  # noqa: E731  (millimetres -> voxels along a stroke)
    classes = [int(c) for c in np.unique(truth[roi & (truth > 0)])]
    sizes = {k: int(np.count_nonzero(roi & (truth == k))) for k in classes}
    smallest = min(classes, key=lambda k: (sizes[k], k)) if classes else None
    if style == "sparse":
        sparse_class = smallest if sparse_class is None else int(sparse_class)
        if sparse_class not in classes:
            raise ValueError(f"sparse_class {sparse_class} is not a class of the ROI ({classes})")

    def region(index, k):
        return (_plane(truth, axis, index) == k) & _plane(roi, axis, index)

    if style == "imbalanced":  # the slice where the smallest class's longest centre line is longest, middle first
        middle = len(slices) // 2
        reach = {
            index: max((int(p.sum()) for p in _skeleton_pieces(region(index, smallest), erode_px)), default=0)
            for index in slices
        }
        short_slice = max([slices[middle]] + slices, key=lambda i: reach[i])
    for index in slices:
        plane = _plane(scribbles, axis, index)
        for k in [c for c in classes if region(index, c).any()]:
            if style == "painted":
                strokes = _painted(region(index, k))
            elif style == "imbalanced" and k == smallest:
                if index != short_slice:
                    continue
                strokes = _class_strokes(region(index, k), erode_px, 1, px(short_mm))
            elif style == "imbalanced":
                strokes = _class_strokes(region(index, k), erode_px, strokes_per_class, px(long_mm))
            elif style == "sparse" and k == sparse_class:
                continue  # drawn below
            else:
                strokes = _class_strokes(region(index, k), erode_px, strokes_per_class, px(stroke_mm))
            plane[strokes & (plane == 0)] = k
    if style == "sparse":
        _add_sparse(scribbles, region, slices, axis, sparse_class, erode_px, sparse_voxels)
    missing = sorted(set(classes) - set(np.unique(scribbles).tolist()))
    if missing:
        raise ValueError(f"no scribble could be made for class(es) {missing} on the chosen slices")
    return scribbles


def _add_sparse(scribbles, region, slices, axis, k, erode_px, n_voxels) -> None:
    """Stroke ``n_voxels`` voxels of class ``k``: its centre line walked from one end, middle slice first."""
    middle = len(slices) // 2
    order = [slices[middle]] + [s for i, s in enumerate(slices) if i != middle]
    left = int(n_voxels)
    for erode in (erode_px, (0, 0)):  # centre lines of the eroded class first, then of the class itself
        for index in order:
            for piece in _skeleton_pieces(region(index, k), erode):
                if left <= 0:
                    return
                plane = _plane(scribbles, axis, index)
                run = [p for p in _walk_order(piece, int(piece.sum())) if plane[p] == 0][:left]
                for p in run:
                    plane[p] = k
                left -= len(run)


def corrective_stroke(
    scribbles: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    roi: np.ndarray,
    spacing: Sequence[float],
    class_id: int,
    axis: int = 2,
    stroke_mm: float = 40.0,
) -> np.ndarray:
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
    plane = _plane(out, axis, index)  # a view into ``out``
    plane[stroke & (plane == 0)] = class_id
    return out
