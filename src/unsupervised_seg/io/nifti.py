"""NIfTI in and out (nibabel), keeping the input's header so results land on exactly its grid.

Array order is nibabel's (i, j, k); ``Volume.affine`` is the image's index -> RAS affine.
A 3D file with one slice (i, j, 1) is read as a 2D image; a 4D file (i, j, k, c) as a volume with
c channels (e.g. stacked MR sequences), or, through ``read_nifti_frames``, as c time points.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import nibabel as nib
import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume
from .grid import index_to_ras


def _load(path):
    """(nibabel image, float32 array) or InputError for unreadable, truncated or foreign files."""
    try:
        image = nib.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types for foreign, corrupt or truncated files
        reason = "file is truncated" if isinstance(exc, EOFError) else f"{exc.__class__.__name__}: {exc}"
        raise InputError(f"cannot read as NIfTI ({reason})".replace("\n", " "), path) from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"not a NIfTI image ({image.__class__.__name__})", path)
    return image, data


def _volume(data: np.ndarray, image, path, spatial_shape) -> Volume:
    """Volume (C, *spatial) from channels-last ``data``; the header and original shape go into meta."""
    dims = len(spatial_shape)
    zooms = image.header.get_zooms()
    channels = data.reshape(tuple(spatial_shape) + (-1,))
    meta = {"format": "nifti", "nifti_header": image.header.copy(), "nifti_spatial_shape": tuple(image.shape[:3])}
    return Volume(
        np.ascontiguousarray(np.moveaxis(channels, -1, 0)),
        tuple(float(z) for z in zooms[:dims]),
        np.asarray(image.affine, dtype=float),
        source=str(path),
        meta=meta,
    )


def _spatial_shape(shape, path):
    """Spatial shape of a NIfTI array: 2D for one slice, else the first three axes."""
    if len(shape) < 2:
        raise InputError(f"NIfTI array of shape {shape} is not an image", path)
    if len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1 and int(np.prod(shape[3:])) == 1):
        return tuple(shape[:2])
    return tuple(shape[:3])


def read_nifti(path) -> Volume:
    """Volume (C, *spatial) float32 from a .nii / .nii.gz file; 4D/5D extra axes become channels."""
    image, data = _load(path)
    shape = data.shape
    if len(shape) == 5 and shape[3] == 1:  # NIfTI vector images: (i, j, k, 1, c)
        data = data[:, :, :, 0]
        shape = data.shape
    if len(shape) > 4:
        raise InputError(f"NIfTI array of shape {shape} has more than 4 dimensions", path)
    return _volume(data, image, path, _spatial_shape(shape, path))


def read_nifti_frames(path) -> List[Volume]:
    """A 4D NIfTI (i, j, k, t) as a list of t one-channel Volumes (sequence mode)."""
    image, data = _load(path)
    if data.ndim != 4 or data.shape[3] < 1:
        raise InputError(f"sequence mode needs a 4D NIfTI (time on the last axis), got shape {data.shape}", path)
    spatial = _spatial_shape(data.shape[:3], path)
    return [_volume(data[..., t], image, path, spatial) for t in range(data.shape[3])]


def read_nifti_labels(path):
    """(label array (*spatial), index -> RAS affine) of a NIfTI label map; 3D with one slice -> 2D."""
    image, data = _load(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise InputError(f"label map must be 2D or 3D, got shape {data.shape}", path)
    return data.reshape(_spatial_shape(data.shape, path)), np.asarray(image.affine, dtype=float)


def label_dtype(labels: np.ndarray):
    """Smallest unsigned type for label values: uint8, else uint16."""
    top = int(labels.max()) if labels.size else 0
    if top > np.iinfo(np.uint16).max:
        raise InputError(f"label value {top} does not fit in 16 bits")
    return np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16


def write_nifti(labels: np.ndarray, reference: Volume, path) -> None:
    """Write labels (*spatial[, t]) on ``reference``'s grid.

    For a NIfTI reference the header is copied: shape (with a trailing time axis if present), qform,
    sform and their codes, zooms and units stay as in the input. Otherwise the affine is the
    reference's index -> RAS matrix with scanner-anat codes.
    """
    dtype = label_dtype(labels)
    header = reference.meta.get("nifti_header")
    if header is not None:
        spatial = reference.meta["nifti_spatial_shape"]
        extra = labels.shape[reference.spatial_dims :]
        data = labels.reshape(tuple(spatial) + tuple(extra)).astype(dtype)
        header = header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = image_class(data, None, header)  # affine None: qform/sform kept exactly as in the header
    else:
        image = nib.Nifti1Image(labels.astype(dtype), index_to_ras(reference))
        image.header.set_qform(image.affine, code=1)
        image.header.set_sform(image.affine, code=1)
        image.header.set_xyzt_units("mm")
    image.set_data_dtype(dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, int(labels.max()) if labels.size else 0
    image.header.set_intent("label")
    nib.save(image, str(Path(path)))
