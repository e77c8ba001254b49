"""NRRD / MHA / MHD in and out through SimpleITK.

SimpleITK arrays are (k, j, i); the Volume keeps index order (i, j, k) like nibabel, so the same
affine convention (index -> RAS) holds for every format. Vector pixels become channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.volume import Volume
from .grid import index_to_lps, itk_geometry, ras_from_itk
from .nifti import label_dtype


def _read(path):
    """(SimpleITK image, array in index order (i, j[, k][, c])) or InputError."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"cannot read as an ITK image ({first})", path) from None
    dims = image.GetDimension()
    if dims not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got {dims}D", path)
    array = sitk.GetArrayFromImage(image)  # (k, j, i[, c])
    vector = image.GetNumberOfComponentsPerPixel() > 1
    axes = tuple(range(dims - 1, -1, -1)) + ((dims,) if vector else ())
    return image, np.transpose(array, axes)


def _affine(image) -> np.ndarray:
    return ras_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def read_itk(path) -> Volume:
    """Volume (C, *spatial) float32 from a NRRD/MHA/MHD file."""
    image, array = _read(path)
    dims = image.GetDimension()
    channels = array if array.ndim > dims else array[..., None]
    data = np.ascontiguousarray(np.moveaxis(channels, -1, 0).astype(np.float32))
    return Volume(data, tuple(image.GetSpacing()), _affine(image), source=str(path), meta={"format": "itk"})


def read_itk_labels(path):
    """(label array (*spatial) in index order, index -> RAS affine) of a NRRD/MHA label map."""
    image, array = _read(path)
    if array.ndim != image.GetDimension():
        raise InputError("label map must have one component per voxel", path)
    return array, _affine(image)


def write_itk(labels: np.ndarray, reference: Volume, path) -> None:
    """Write labels (*spatial, index order) with the reference's origin, spacing and direction."""
    dims = labels.ndim
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(label_dtype(labels)).T))
    origin, spacing, direction = itk_geometry(index_to_lps(reference), dims)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(Path(path)), True)
