"""2D raster images (PNG, JPEG, TIFF, BMP) in and PNG label maps out, through Pillow.

Arrays are (rows, columns); spacing is 1 and there is no affine. Label maps are written as palette PNGs:
the pixel values are the labels (read back unchanged), and the palette shows each label in its segment
colour (label 0 black), so that the file is readable in any image viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.errors import InputError
from ..core.segments import label_color
from ..core.volume import Volume
from .nifti import label_dtype


def _open(path) -> Image.Image:
    try:
        image = Image.open(str(path))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"cannot read as a 2D image ({exc.__class__.__name__}: {exc})".replace("\n", " "), path
        ) from None
    if getattr(image, "n_frames", 1) > 1:
        raise InputError(f"image has {image.n_frames} frames; pass a folder of frames with --sequence", path)
    return image


def read_raster(path) -> Volume:
    """Volume (C, rows, columns) float32: 1 channel for grey images, 3 for colour (alpha dropped)."""
    image = _open(path)
    if image.mode in ("P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        image = image.convert("RGB")
    elif image.mode in ("1", "LA"):
        image = image.convert("L")
    array = np.asarray(image).astype(np.float32)
    data = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Volume(np.ascontiguousarray(data), (1.0, 1.0), None, source=str(path), meta={"format": "raster"})


def read_raster_labels(path) -> np.ndarray:
    """(rows, columns) label values: grey levels, or palette indices for palette PNGs."""
    image = _open(path)
    if image.mode in ("LA", "PA"):
        image = image.getchannel(0)
    array = np.asarray(image)
    if array.ndim == 3:
        if not (np.all(array[..., :3] == array[..., :1])):
            raise InputError("label image must hold one class id per pixel (grey or palette PNG), not colours", path)
        array = array[..., 0]
    return array


def label_palette() -> list:
    """The 256-entry RGB palette of label PNGs: index 0 black, index k the colour of label k."""
    colours = [(0, 0, 0)] + [tuple(round(255 * c) for c in label_color(k)) for k in range(1, 256)]
    return [value for colour in colours for value in colour]


def write_png(labels: np.ndarray, path) -> None:
    """Write 2D labels (rows, columns) as a PNG holding the label values.

    Labels up to 255: an 8-bit palette ('P') image coloured by ``label_palette``; above: a 16-bit grey image.
    """
    if labels.ndim != 2:
        raise InputError(f"PNG output needs a 2D image, the labels have shape {labels.shape}", path)
    dtype = label_dtype(labels)
    image = Image.fromarray(np.ascontiguousarray(labels.astype(dtype)))
    if dtype == np.uint8:
        image.putpalette(label_palette())  # 'L' -> 'P' with the indices unchanged
    image.save(str(Path(path)), format="PNG")
