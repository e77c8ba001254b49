"""Read a folder of DICOM files as one 3D Volume.

Array order: ``Volume.data`` is (1, K, R, C) float32 = (channel, slice, row, column), the order of
highdicom's Volume and of SimpleITK's GetArrayFromImage. Slices run along the slice normal
(row direction x column direction of ImageOrientationPatient), in increasing position.
``Volume.spacing`` is (slice step, row spacing, column spacing) in mm, and ``Volume.affine`` maps
(k, r, c) to RAS mm (DICOM patient coordinates are LPS: x and y change sign).

Voxel values are the modality values: stored pixels with RescaleSlope/RescaleIntercept (or the
Modality LUT) applied, e.g. Hounsfield units for CT.

Supported: single-frame series (any transfer syntax pydicom has a decoder for) and a series held in
one multi-frame (enhanced) image, read with highdicom. Everything else is an InputError that names the
file and the problem.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..core.errors import InputError
from ..core.volume import Volume

# Relative tolerance on slice gaps and absolute tolerance on direction cosines.
SPACING_RTOL = 0.01
ORIENTATION_ATOL = 1e-4
# DICOM objects that are never image slices of a volume (they may sit beside a series, e.g. our own SEG output).
NON_VOLUME_SOP_CLASSES = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_dicom_series(folder, series_uid: Optional[str] = None) -> Volume:
    """Read the DICOM series in ``folder`` (searched recursively) as a Volume of shape (1, K, R, C).

    Files that are not DICOM (no "DICM" marker and no DICOM group 0008 start) and DICOM objects that
    are not images (DICOMDIR, SEG, RTSTRUCT...) are ignored. ``series_uid`` picks one series when the
    folder holds several. meta: "dicom_datasets" (the source datasets in slice order, pixel data
    dropped: highdicom needs only their headers), "dicom_files" (their paths), "series_instance_uid".

    Raises InputError for: no DICOM images, several series (listed) without ``series_uid``, an unknown
    ``series_uid``, a single slice, mixed orientations or image sizes, missing or unevenly spaced
    slices (the gap is named), duplicate positions, corrupt or undecodable files (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder (a DICOM series is read from a folder of files)", folder)
    series = _scan_folder(folder)
    if not series:
        raise InputError("no DICOM images found in the folder", folder)
    if series_uid is None and len(series) > 1:
        raise InputError(
            f"the folder holds {len(series)} DICOM series, choose one with --series-uid: " + _describe_series(series),
            folder,
        )
    if series_uid is not None and series_uid not in series:
        raise InputError(f"series {series_uid} is not in the folder, which holds: " + _describe_series(series), folder)
    uid = series_uid if series_uid is not None else next(iter(series))
    headers = series[uid]
    multiframe = [(p, ds) for p, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multiframe:
        if len(headers) > 1:
            raise InputError(
                f"series {uid} mixes a multi-frame file with {len(headers) - 1} other file(s); "
                "only a series of single-frame files or one multi-frame file can be read",
                multiframe[0][0],
            )
        volume = _read_multiframe(*multiframe[0])
    else:
        volume = _read_single_frames(headers)
    volume.source = str(folder)
    volume.meta["series_instance_uid"] = uid
    return volume


def _scan_folder(folder: Path) -> Dict[str, List[tuple]]:
    """{SeriesInstanceUID: [(path, header dataset)]} of the image files under ``folder``, in walk order."""
    series = defaultdict(list)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            header = _read_header(path)
            if header is None:
                continue
            sop_class = header.get("SOPClassUID") or header.file_meta.get("MediaStorageSOPClassUID")
            if sop_class is None:
                raise InputError("corrupt DICOM file: no SOP Class UID (truncated or damaged header)", path)
            if sop_class in NON_VOLUME_SOP_CLASSES:
                continue
            missing = [k for k in ("Rows", "Columns", "SeriesInstanceUID") if k not in header]
            if missing and "Image Storage" not in pydicom.uid.UID(sop_class).name:
                continue  # a DICOM object without an image (SR, KOS, PDF...)
            if missing:
                raise InputError(
                    f"corrupt DICOM file: image without {', '.join(missing)} (truncated or damaged header)", path
                )
            series[str(header.SeriesInstanceUID)].append((path, header))
    return dict(series)


def _looks_like_dicom(path: Path) -> bool:
    """True for a Part 10 file ("DICM" at byte 128) or a bare dataset starting with group 0008."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", path) from None
    return head[128:132] == b"DICM" or head[:2] == b"\x08\x00"


def _read_header(path: Path) -> Optional[pydicom.Dataset]:
    """The header of a DICOM file (no pixel data), None for a non-DICOM file; InputError if corrupt."""
    if not _looks_like_dicom(path):
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as err:
        raise InputError(f"corrupt DICOM file: {_one_line(err)}", path) from None


def _describe_series(series: Dict[str, List[tuple]]) -> str:
    parts = []
    for uid, items in series.items():
        ds = items[0][1]
        parts.append(
            f"{uid} (#{ds.get('SeriesNumber', '?')} {ds.get('Modality', '?')} "
            f"'{ds.get('SeriesDescription', '')}', {len(items)} files)"
        )
    return "; ".join(parts)


def _geometry(path: Path, ds: pydicom.Dataset):
    """(position (3,), orientation (6,), pixel spacing (2,)) of a single-frame image, floats."""
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing and "PerFrameFunctionalGroupsSequence" in ds:
        raise InputError(
            "a series of one-frame enhanced images is not supported (only a series of single-frame "
            "images or one multi-frame image)",
            path,
        )
    if missing:
        raise InputError(f"image has no {', '.join(missing)}: cannot place it in a 3D volume", path)
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        spacing = np.array([float(v) for v in ds.PixelSpacing])
    except (TypeError, ValueError) as err:
        raise InputError(f"unreadable image geometry: {err}", path) from None
    if position.shape != (3,) or orientation.shape != (6,) or spacing.shape != (2,) or not (spacing > 0).all():
        raise InputError("malformed ImagePositionPatient, ImageOrientationPatient or PixelSpacing", path)
    return position, orientation, spacing


def _read_single_frames(headers: List[tuple]) -> Volume:
    """Sort single-frame images along the slice normal, check the grid, decode and stack them."""
    geometry = [_geometry(p, ds) for p, ds in headers]
    path0, ds0 = headers[0]
    orientation0, spacing0 = geometry[0][1], geometry[0][2]
    shape0 = (int(ds0.Rows), int(ds0.Columns))
    for (path, ds), (_, orientation, spacing) in zip(headers, geometry):
        if not np.allclose(orientation, orientation0, atol=ORIENTATION_ATOL):
            raise InputError(
                f"mixed slice orientations in one series: ImageOrientationPatient "
                f"{np.round(orientation, 4).tolist()} here, {np.round(orientation0, 4).tolist()} in "
                f"{path0.name}",
                path,
            )
        if (int(ds.Rows), int(ds.Columns)) != shape0 or not np.allclose(spacing, spacing0, rtol=1e-4):
            raise InputError(
                f"image size {int(ds.Rows)}x{int(ds.Columns)} with pixel spacing {spacing.tolist()} "
                f"differs from {shape0[0]}x{shape0[1]} with {spacing0.tolist()} in {path0.name}",
                path,
            )
    if len(headers) < 2:
        raise InputError("the series has a single slice: a 3D volume needs at least two", path0)
    row_dir, col_dir = orientation0[:3], orientation0[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([g[0] for g in geometry])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    positions, along = positions[order], along[order]
    step = _check_stack(headers, positions, along, normal)

    data = np.stack([_decode(path) for path, _ in headers])
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = normal * step
    affine_lps[:3, 1] = col_dir * spacing0[0]
    affine_lps[:3, 2] = row_dir * spacing0[1]
    affine_lps[:3, 3] = positions[0]
    datasets = [ds for _, ds in headers]
    meta = {"dicom_datasets": datasets, "dicom_files": [str(p) for p, _ in headers]}
    if "PixelPaddingValue" in ds0:  # stored value -> the rescaled value the padded voxels now hold
        meta["padding_value"] = float(ds0.PixelPaddingValue) * float(getattr(ds0, "RescaleSlope", 1) or 1) + float(
            getattr(ds0, "RescaleIntercept", 0) or 0
        )
    return Volume(data[None], (step, float(spacing0[0]), float(spacing0[1])), LPS_TO_RAS @ affine_lps, meta=meta)


def _check_stack(headers, positions: np.ndarray, along: np.ndarray, normal: np.ndarray) -> float:
    """Check sorted slice positions: distinct, evenly spaced, stacked along the normal. Returns the step (mm)."""
    gaps = np.diff(along)
    for i, gap in enumerate(gaps):
        if gap < 1e-3:
            raise InputError(
                f"two images at the same slice position {along[i]:.3f} mm: {headers[i][0].name} and "
                f"{headers[i + 1][0].name} (several echoes, phases or acquisitions in one series?)",
                headers[i + 1][0],
            )
    expected = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - expected) > SPACING_RTOL * expected)
    if uneven.size:
        i = int(uneven[0])
        n_missing = round(gaps[i] / expected) - 1
        what = (
            f"{n_missing} missing slice(s)"
            if n_missing >= 1 and abs(gaps[i] - (n_missing + 1) * expected) <= SPACING_RTOL * expected
            else "uneven slice spacing"
        )
        raise InputError(
            f"{what}: gap of {gaps[i]:.4g} mm between slice positions {along[i]:.6g} and "
            f"{along[i + 1]:.6g} mm ({headers[i][0].name}, {headers[i + 1][0].name}); expected "
            f"{expected:.4g} mm ({len(uneven)} uneven gap(s) in {len(headers)} slices)",
            headers[i + 1][0],
        )
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    shear = float(np.abs(offsets).max())
    if shear > SPACING_RTOL * expected + 1e-3:
        raise InputError(
            f"slices are not stacked along the slice normal (in-plane shift up to {shear:.3g} mm, "
            "e.g. a gantry tilt): not a regular volume",
            headers[-1][0],
        )
    return float((along[-1] - along[0]) / (len(along) - 1))


def _decode(path: Path) -> np.ndarray:
    """(R, C) float32 modality values of a single-frame image file."""
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as err:  # the header was readable a moment ago: truncated or changed file
        raise InputError(f"corrupt DICOM file: {_one_line(err)}", path) from None
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for missing decoders and bad pixel data
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        name = getattr(syntax, "name", None) or "unknown"
        raise InputError(f"cannot read pixel data (transfer syntax {name}): {_one_line(err)}", path) from None
    if pixels.ndim != 2:
        raise InputError(
            f"expected a greyscale image, got pixel array of shape {pixels.shape} "
            f"({ds.get('PhotometricInterpretation', '?')})",
            path,
        )
    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)


def _read_multiframe(path: Path, header: pydicom.Dataset) -> Volume:
    """One multi-frame (enhanced) image holding a regular 3D volume, read with highdicom."""
    import highdicom as hd

    try:
        ds = pydicom.dcmread(path, force=True)
        image = hd.Image.from_dataset(ds, copy=False)
        hd_volume = image.get_volume(dtype=np.float32, apply_modality_transform=True)
    except Exception as err:  # highdicom/pydicom: geometry not a volume, undecodable frames, ...
        raise InputError(f"cannot read the multi-frame image as a 3D volume: {_one_line(err)}", path) from None
    if hd_volume.spatial_shape[0] < 2:
        raise InputError("the multi-frame image has a single slice: a 3D volume needs at least two", path)
    array = np.asarray(hd_volume.array, dtype=np.float32)
    if array.ndim != 3:
        raise InputError(f"expected a greyscale volume, got array of shape {array.shape}", path)
    affine_lps = np.array(hd_volume.affine, dtype=float)
    normal = np.cross(affine_lps[:3, 2], affine_lps[:3, 1])  # row direction x column direction
    if affine_lps[:3, 0] @ normal < 0:  # highdicom may stack slices downwards: make them run along the normal
        array = np.ascontiguousarray(array[::-1])
        affine_lps[:3, 3] += affine_lps[:3, 0] * (array.shape[0] - 1)
        affine_lps[:3, 0] *= -1
    if "PixelData" in ds:
        del ds.PixelData
    return Volume(
        array[None],
        tuple(float(s) for s in hd_volume.spacing),
        LPS_TO_RAS @ affine_lps,
        meta={"dicom_datasets": [ds], "dicom_files": [str(path)]},
    )


def _one_line(err: Exception) -> str:
    """An exception's message on one line (pydicom lists missing decoder plugins on several)."""
    return " ".join(str(err).split())
