"""PNG overlay of a label map on its image: three orthogonal planes for 3D, the image itself for 2D.

3D planes are shown in RAS display orientation when the volume has an affine (superior up,
anterior up in the axial plane, the subject's left on the left), with square pixels in mm.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ..core.segments import label_color
from ..core.volume import Volume

MIN_PANEL = 256  # panels are enlarged to at least this many pixels high
GAP = 4  # black pixels between panels


def _grey(image: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """(*plane[, 3]) float -> same shape in [0, 1], robust range taken inside ``roi`` (or everywhere)."""
    values = image[roi] if roi.any() else image.ravel()
    lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def _blend(grey: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """RGB uint8 (rows, cols, 3) of a grey (rows, cols) or colour (rows, cols, 3) plane with labels tinted."""
    rgb = np.repeat(grey[..., None], 3, axis=-1) if grey.ndim == 2 else grey.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        where = labels == value
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(label_color(int(value)))
    return (rgb * 255).round().astype(np.uint8)


def _to_ras(array: np.ndarray, affine: Optional[np.ndarray], spacing) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """Reorder/flip the three spatial axes of (x, y, z, ...) so that they run L->R, P->A, I->S."""
    if affine is None:
        return array, tuple(spacing)
    import nibabel.orientations as orientations

    ornt = orientations.io_orientation(affine)
    out = orientations.apply_orientation(array, ornt)
    order = np.argsort(ornt[:, 0])
    return out, tuple(np.asarray(spacing, dtype=float)[order])


def _panel(rgb: np.ndarray, row_mm: float, col_mm: float, scale: float) -> Image.Image:
    """A plane (rows, cols, 3) resized to square pixels (``scale`` pixels per mm)."""
    rows, cols = rgb.shape[:2]
    size = (max(1, round(cols * col_mm * scale)), max(1, round(rows * row_mm * scale)))
    return Image.fromarray(rgb).resize(size, Image.NEAREST)


def overlay_image(volume: Volume, labels: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """RGB image of ``labels`` (*spatial) over ``volume`` (C, *spatial): one panel (2D) or three (3D).

    3D panels: sagittal, coronal and axial planes through the centre of the labelled region.
    """
    labels = np.asarray(labels)
    data = volume.data
    image = data[0] if data.shape[0] != 3 else np.moveaxis(data, 0, -1)  # colour images stay colour
    if volume.spatial_dims == 2:
        grey = _grey(image.astype(np.float32), labels > 0)
        rgb = _blend(grey, labels, alpha)
        panels = [(rgb, volume.spacing[0], volume.spacing[1])]
    else:
        image, spacing = _to_ras(data[0], volume.affine, volume.spacing)
        labels, _ = _to_ras(labels, volume.affine, volume.spacing)
        grey = _grey(image.astype(np.float32), labels > 0)
        inside = np.argwhere(labels > 0)
        centre = inside.mean(0).round().astype(int) if inside.size else np.array(labels.shape) // 2
        sx, sy, sz = spacing
        cuts = [  # (plane (a, b) before display transform, row spacing, column spacing)
            (np.s_[centre[0], :, :], sz, sy),  # sagittal: rows = superior..inferior, cols = posterior..anterior
            (np.s_[:, centre[1], :], sz, sx),  # coronal: cols = left..right
            (np.s_[:, :, centre[2]], sy, sx),  # axial: rows = anterior..posterior
        ]
        panels = []
        for cut, row_mm, col_mm in cuts:
            plane_rgb = _blend(np.flipud(grey[cut].T), np.flipud(labels[cut].T), alpha)
            panels.append((plane_rgb, row_mm, col_mm))
    height_mm = max(p.shape[0] * r for p, r, _ in panels)
    smallest = min(min(r, c) for _, r, c in panels)
    scale = max(1.0 / smallest, MIN_PANEL / height_mm)
    tiles: List[Image.Image] = [_panel(p, r, c, scale) for p, r, c in panels]
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1), max(t.height for t in tiles)))
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, (canvas.height - tile.height) // 2))
        x += tile.width + GAP
    return canvas


def save_overlay(volume: Volume, labels: np.ndarray, path, alpha: float = 0.4) -> Path:
    """Write the overlay PNG atomically; returns the path."""
    from ..io.atomic import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        overlay_image(volume, labels, alpha).save(str(tmp), format="PNG")
    return path
