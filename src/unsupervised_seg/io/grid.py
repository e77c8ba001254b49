"""Voxel-grid geometry shared by readers and writers: index -> world matrices and grid matching.

Every Volume carries ``affine``: a 4x4 matrix from its array indices (in the Volume's array order)
to world RAS millimetres, or None (plain 2D images), in which case the grid is the spacing alone.
ITK/NRRD/Slicer use LPS; the two differ by a sign flip of the first two world axes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..core.errors import InputError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def index_to_ras(volume) -> np.ndarray:
    """4x4 index -> RAS of a Volume (2D volumes: the third index is 0); spacing only when no affine."""
    if volume.affine is not None:
        return np.asarray(volume.affine, dtype=float)
    spacing = list(volume.spacing) + [1.0] * (3 - len(volume.spacing))
    return np.diag(spacing + [1.0])


def index_to_lps(volume) -> np.ndarray:
    """4x4 index -> LPS (ITK, NRRD, Slicer convention) of a Volume."""
    return RAS_TO_LPS @ index_to_ras(volume)


def ras_from_itk(origin, spacing, direction) -> np.ndarray:
    """4x4 index -> RAS from ITK's LPS origin, spacing and row-major direction (2D or 3D)."""
    dims = len(origin)
    lps = np.eye(4)
    lps[:dims, :dims] = np.asarray(direction, dtype=float).reshape(dims, dims) * np.asarray(spacing, dtype=float)
    lps[:dims, 3] = origin
    return RAS_TO_LPS @ lps


def itk_geometry(ijk_to_lps: np.ndarray, dims: int):
    """(origin, spacing, row-major direction) for ITK from a 4x4 index -> LPS matrix, for a ``dims``-D image."""
    columns = ijk_to_lps[:dims, :dims]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing
    return tuple(ijk_to_lps[:dims, 3]), tuple(spacing), tuple(direction.ravel())


def place_on_grid(
    array: np.ndarray, array_to_ras: Optional[np.ndarray], reference, source, what: str = "label map"
) -> np.ndarray:
    """Put a label array (*spatial) defined on its own grid onto ``reference``'s grid.

    The grids must share orientation and spacing; the array may cover a sub-box of the reference
    (e.g. a Slicer segmentation saved at its minimal extent), which is padded with 0.
    Without geometry (``array_to_ras`` None) the shapes must be equal.
    Raises InputError naming ``source`` when the array is on another grid.
    """
    shape = tuple(reference.spatial_shape)
    if array.shape == shape and (
        array_to_ras is None
        or reference.affine is None
        or np.allclose(array_to_ras, index_to_ras(reference), atol=1e-3)
    ):
        return array
    if array_to_ras is None or reference.affine is None or array.ndim != len(shape):
        raise InputError(f"{what} has shape {array.shape}, the image {shape}: not on the image's grid", source)
    to_reference = np.linalg.inv(index_to_ras(reference)) @ array_to_ras
    offset = to_reference[: array.ndim, 3]
    if not (
        np.allclose(to_reference[:3, :3], np.eye(3), atol=1e-3) and np.allclose(offset, np.round(offset), atol=1e-2)
    ):
        raise InputError(
            f"{what} is on another grid than the image (different orientation, spacing or "
            f"sub-voxel shift; resample it onto the image first)",
            source,
        )
    offset = np.round(offset).astype(int)
    placed = np.zeros(shape, dtype=array.dtype)
    src, dst = [], []
    for start, n_src, n_ref in zip(offset, array.shape, shape):
        lo, hi = max(start, 0), min(start + n_src, n_ref)
        if hi <= lo:
            lo = hi = 0
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    placed[tuple(dst)] = array[tuple(src)]
    if np.count_nonzero(placed) != np.count_nonzero(array):
        raise InputError(f"{what} extends beyond the image's grid", source)
    return placed
