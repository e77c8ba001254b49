"""Reading images and scribbles, writing label maps: one entry point per direction, dispatch by name.

    load_volume(path, series_uid=None) -> Volume
        NIfTI (.nii, .nii.gz; nibabel), NRRD/MHA/MHD (SimpleITK), PNG/JPEG/TIFF/BMP (Pillow; RGB -> 3 channels),
        a folder of DICOM files (unsupervised_seg.io.dicom.read_dicom_series).
    load_scribbles(path, reference, reference_convention=False) -> (int64 (*spatial), {class id: name})
        label maps (NIfTI, NRRD/MHA, PNG) with 0 = unlabelled, k = class k; .seg.nrrd segments become classes
        1..K named after the segments; reference_convention: 255 = unlabelled, v = class v + 1 (the
        reference code's PNG scribbles).
    load_mask(path, reference) -> bool (*spatial)
    save_labels(labels, reference, path, format=None, class_names=None, class_colors=None, scribbled=False)
        nifti, nrrd (also .mha), seg.nrrd, png (2D), dicom-seg; written atomically on the reference's grid.

Label maps given on another grid than the image are rejected, except a sub-box of the same grid
(a segmentation saved at its minimal extent), which is placed into the image's grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import InputError
from ..core.scribbles import from_reference_convention, validate_scribbles
from ..core.volume import Volume
from .atomic import atomic_output
from .grid import place_on_grid
from .paths import FORMAT_EXTENSIONS, ITK_EXTENSIONS, NIFTI_EXTENSIONS, RASTER_EXTENSIONS, format_from_path, split_name

FORMATS = tuple(FORMAT_EXTENSIONS)


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    return path


def load_volume(path, series_uid: Optional[str] = None) -> Volume:
    """Read an image file or a DICOM series folder into a Volume (C, *spatial) float32."""
    path = _existing(path)
    if path.is_dir():
        try:
            from .dicom import read_dicom_series
        except ImportError as exc:
            raise InputError(f"reading a DICOM folder needs the DICOM reader ({exc})", path) from None
        return read_dicom_series(path, series_uid=series_uid)
    ext = split_name(path)[1]
    if ext in NIFTI_EXTENSIONS:
        from .nifti import read_nifti

        return read_nifti(path)
    if ext == ".seg.nrrd":
        raise InputError("this is a segmentation (.seg.nrrd), not an image; pass it with --scribbles", path)
    if ext in ITK_EXTENSIONS:
        from .itk_image import read_itk

        return read_itk(path)
    if ext in RASTER_EXTENSIONS:
        from .png import read_raster

        return read_raster(path)
    if ext == ".dcm":
        raise InputError("a single DICOM file: pass the folder that holds the whole series", path)
    supported = ", ".join(NIFTI_EXTENSIONS + ITK_EXTENSIONS + RASTER_EXTENSIONS)
    raise InputError(
        f"not a supported image file (extension '{ext or 'none'}'; supported: {supported}, or a DICOM folder)", path
    )


def load_frames(path) -> List[Volume]:
    """Frames for sequence mode: a 4D NIfTI (time on the last axis) or a folder of 2D/3D images (by name)."""
    from .paths import list_inputs

    path = _existing(path)
    if path.is_dir():
        frames = [p for p in list_inputs(path) if p != path]
        if not frames:
            raise InputError("folder holds no image frames", path)
        return [load_volume(p) for p in frames]
    if split_name(path)[1] not in NIFTI_EXTENSIONS:
        raise InputError("sequence mode needs a 4D NIfTI file or a folder of frames", path)
    from .nifti import read_nifti_frames

    return read_nifti_frames(path)


def _read_label_array(path, reference: Volume) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(label array, its index -> RAS affine or None) of a NIfTI / NRRD / PNG label map."""
    ext = split_name(path)[1]
    if ext in NIFTI_EXTENSIONS:
        from .nifti import read_nifti_labels

        return read_nifti_labels(path)
    if ext in ITK_EXTENSIONS:
        from .itk_image import read_itk_labels

        return read_itk_labels(path)
    if ext in RASTER_EXTENSIONS:
        from .png import read_raster_labels

        return read_raster_labels(path), None
    raise InputError(
        f"not a supported label map (extension '{ext or 'none'}'; supported: .seg.nrrd, "
        f"{', '.join(NIFTI_EXTENSIONS + ITK_EXTENSIONS)}, .png)",
        path,
    )


def load_scribbles(path, reference: Volume, reference_convention: bool = False) -> Tuple[np.ndarray, Dict[int, str]]:
    """Scribbles on the reference's grid: (int64 (*spatial), 0 = unlabelled, k = class k; {k: name})."""
    path = _existing(path)
    if split_name(path)[1] == ".seg.nrrd":
        if reference_convention:
            raise InputError("the 255 = unlabelled convention applies to label images, not .seg.nrrd", path)
        from .seg_nrrd import read_seg_nrrd

        labels, names, _ = read_seg_nrrd(path, reference)
        return labels, names
    array, affine = _read_label_array(path, reference)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError("scribbles must hold integer class ids (0 = unlabelled)", path)
    if reference_convention:
        array = from_reference_convention(array)
    placed = place_on_grid(np.asarray(array).astype(np.int64), affine, reference, path, "scribbles")
    checked = validate_scribbles(placed, reference.spatial_shape, np.iinfo(np.int32).max, path)
    return (np.zeros(reference.spatial_shape, np.int64) if checked is None else checked), {}


def load_mask(path, reference: Volume) -> np.ndarray:
    """ROI mask (*spatial) bool on the reference's grid: non-zero voxels (any segment of a .seg.nrrd)."""
    path = _existing(path)
    if split_name(path)[1] == ".seg.nrrd":
        from .seg_nrrd import read_seg_nrrd

        labels = read_seg_nrrd(path, reference)[0]
    else:
        array, affine = _read_label_array(path, reference)
        labels = place_on_grid(np.asarray(array) != 0, affine, reference, path, "mask")
    if not np.any(labels):
        raise InputError("mask is empty", path)
    return np.asarray(labels) != 0


def check_output_format(format: str, reference: Volume, path) -> None:
    """Raise InputError (naming ``path``) if labels of ``reference`` cannot be written as ``format``:
    called before any work, so that a run never fails after the fit."""
    if format == "png" and reference.spatial_dims != 2:
        raise InputError(
            f"PNG holds 2D label maps; this image is {reference.spatial_dims}D (use .nii.gz, .nrrd or .seg.nrrd)", path
        )
    if format == "dicom-seg" and not reference.meta.get("dicom_datasets"):
        raise InputError("DICOM SEG output needs a DICOM series as input (the input was not read from DICOM)", path)


def save_labels(
    labels: np.ndarray,
    reference: Volume,
    path,
    format: Optional[str] = None,
    class_names: Optional[Dict[int, str]] = None,
    class_colors: Optional[Dict[int, tuple]] = None,
    scribbled: bool = False,
) -> Path:
    """Write labels (*spatial) non-negative int on the reference's grid, atomically; returns the path.

    format: one of FORMATS, or None to take it from the extension. class_names / class_colors name and
    colour segments (seg.nrrd, dicom-seg); scribbled marks a result steered by scribbles (DICOM SEG
    algorithm type SEMIAUTOMATIC).
    """
    path = Path(path)
    format = format or format_from_path(path)
    if format not in FORMAT_EXTENSIONS:
        raise InputError(
            f"unknown output format (choose one of {', '.join(FORMATS)} or use a matching extension)", path
        )
    labels = np.asarray(labels)
    if labels.shape != tuple(reference.spatial_shape):
        raise InputError(f"labels of shape {labels.shape} do not match the image {reference.spatial_shape}", path)
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise InputError("labels must be non-negative integers", path)
    with atomic_output(path) as tmp:
        if format == "nifti":
            from .nifti import write_nifti

            write_nifti(labels, reference, tmp)
        elif format == "nrrd":
            from .itk_image import write_itk

            write_itk(labels, reference, tmp)
        elif format == "seg.nrrd":
            from .seg_nrrd import write_seg_nrrd

            write_seg_nrrd(labels, reference, tmp, class_names, class_colors)
        elif format == "png":
            from .png import write_png

            write_png(labels, tmp)
        else:
            try:
                from .dicom_seg import write_dicom_seg
            except ImportError as exc:
                raise InputError(f"DICOM SEG output is not available ({exc})", path) from None
            write_dicom_seg(labels, reference, tmp, class_names=class_names, scribbled=scribbled)
    return path


def save_label_series(labels: np.ndarray, reference: Volume, path) -> Path:
    """Write a label series (*spatial, t) as one 4D NIfTI on the reference's grid (sequence mode)."""
    path = Path(path)
    if format_from_path(path) != "nifti":
        raise InputError("a label series is written as 4D NIfTI (.nii.gz)", path)
    if labels.shape[:-1] != tuple(reference.spatial_shape):
        raise InputError(f"labels of shape {labels.shape} do not match the frames {reference.spatial_shape}", path)
    from .nifti import write_nifti

    with atomic_output(path) as tmp:
        write_nifti(labels, reference, tmp)
    return path


__all__ = [
    "FORMATS",
    "check_output_format",
    "load_frames",
    "load_mask",
    "load_scribbles",
    "load_volume",
    "save_label_series",
    "save_labels",
]
