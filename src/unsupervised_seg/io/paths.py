"""File naming rules: extensions, stems, image discovery in folders and companion files.

Companion files sit beside an image and share its stem:
  ``<stem>_scribbles.<ext>``  scribbles (label map or .seg.nrrd) for ``<stem>.<image ext>``
  ``<stem>_mask.<ext>``       ROI mask
  ``<stem>_labels.<ext>``     the result this tool writes
Files whose stem ends in one of these suffixes (or ``_overlay``) are never taken as input images.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..core.errors import InputError

# Multi-part extensions first so that "a.seg.nrrd" is (a, .seg.nrrd), not (a.seg, .nrrd).
_MULTI_EXTENSIONS = (".seg.nrrd", ".nii.gz")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
IMAGE_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS + RASTER_EXTENSIONS
LABEL_EXTENSIONS = (".seg.nrrd",) + NIFTI_EXTENSIONS + ITK_EXTENSIONS + (".png",)
COMPANION_SUFFIXES = ("_scribbles", "_mask", "_labels", "_overlay")

# Output formats and the extension each one gets.
FORMAT_EXTENSIONS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "seg.nrrd": ".seg.nrrd", "png": ".png", "dicom-seg": ".dcm"}


def split_name(path) -> Tuple[str, str]:
    """("brain", ".nii.gz") for ".../brain.nii.gz"; the extension is lower-cased."""
    name = Path(path).name
    lower = name.lower()
    for ext in _MULTI_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix.lower()) if suffix else (name, "")


def format_from_path(path) -> Optional[str]:
    """Output format named by a file's extension, or None if it names none."""
    ext = split_name(path)[1]
    if ext in NIFTI_EXTENSIONS:
        return "nifti"
    if ext == ".seg.nrrd":
        return "seg.nrrd"
    if ext in ITK_EXTENSIONS:
        return "nrrd"
    if ext == ".png":
        return "png"
    if ext == ".dcm":
        return "dicom-seg"
    return None


def is_companion(path) -> bool:
    """True for scribble / mask / result files (see the module docstring)."""
    stem, ext = split_name(path)
    return ext == ".seg.nrrd" or stem.endswith(COMPANION_SUFFIXES)


def looks_like_dicom(path) -> bool:
    """True if ``path`` is a file with the DICOM preamble ("DICM" at byte 128) or a .dcm name."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder) -> bool:
    """True if the folder directly holds at least one DICOM file (only the first few files are opened)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    return any(looks_like_dicom(p) for p in files[:20])


def list_inputs(folder) -> List[Path]:
    """Batch items in a folder, sorted by name: image files (not companions) and DICOM series sub-folders.

    A folder that itself holds DICOM files and no image files is one series: it is returned as [folder].
    """
    folder = Path(folder)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.is_file() and split_name(p)[1] in IMAGE_EXTENSIONS and not is_companion(p)]
    if not images and is_dicom_folder(folder):
        return [folder]
    series = [p for p in entries if p.is_dir() and is_dicom_folder(p)]
    return images + series


def input_stem(path) -> str:
    """Name an input contributes to its outputs: the file stem, or the folder name for a DICOM series."""
    path = Path(path)
    return path.name if path.is_dir() else split_name(path)[0]


def find_companion(image, suffix: str, folder=None) -> Optional[Path]:
    """The ``<stem><suffix>.<label ext>`` file for ``image`` in ``folder`` (default: beside it), or None.

    Raises InputError if more than one such file exists (the choice would be a guess).
    """
    image = Path(image)
    folder = Path(folder) if folder is not None else image.parent
    stem = input_stem(image)
    found = [folder / f"{stem}{suffix}{ext}" for ext in LABEL_EXTENSIONS if (folder / f"{stem}{suffix}{ext}").is_file()]
    if len(found) > 1:
        raise InputError(f"more than one {suffix.strip('_')} file: {', '.join(p.name for p in found)}", image)
    return found[0] if found else None
