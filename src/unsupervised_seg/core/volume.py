"""The Volume the engine works on, its validation and intensity normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import InputError


@dataclass
class Volume:
    """An image or volume on one grid.

    data:    (C, *spatial) float32, spatial order of the file's array, 2 or 3 spatial dims.
    spacing: voxel size per spatial axis (same order as ``data``), in mm (1.0 when unknown).
    affine:  4x4 index -> world (RAS, mm) matrix, or None when the format has none (PNG).
    source:  where it came from (path or description), used in error messages.
    meta:    format-specific header information a writer needs to put results on the same grid.
    """

    data: np.ndarray
    spacing: Tuple[float, ...] = ()
    affine: Optional[np.ndarray] = None
    source: Optional[str] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        if not self.spacing:
            self.spacing = (1.0,) * max(self.data.ndim - 1, 0)
        self.spacing = tuple(float(s) for s in self.spacing)

    @property
    def spatial_shape(self) -> Tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return self.data.ndim - 1

    @property
    def n_channels(self) -> int:
        return self.data.shape[0]

    @classmethod
    def from_array(cls, array, spacing: Sequence[float] = (), channel_axis: Optional[int] = None, **kw) -> Volume:
        """Wrap a numpy array: (*spatial) is one channel; ``channel_axis`` names the channel axis if any."""
        array = np.asarray(array)
        if channel_axis is None:
            array = array[None]
        else:
            array = np.moveaxis(array, channel_axis, 0)
        return cls(array, tuple(spacing), **kw)


def validate_volume(volume: Volume) -> None:
    """Raise InputError (naming volume.source) if the volume cannot be segmented."""
    data, src = volume.data, volume.source
    if data.ndim not in (3, 4):
        raise InputError(
            f"expected a 2D or 3D image with a channel axis, got array of shape {data.shape} "
            f"({data.ndim - 1} spatial dimensions; 4D series need sequence mode)",
            src,
        )
    if min(volume.spatial_shape) < 2:
        raise InputError(f"image is too small to segment: spatial shape {volume.spatial_shape}", src)
    if len(volume.spacing) != volume.spatial_dims:
        raise InputError(f"spacing {volume.spacing} does not match {volume.spatial_dims} spatial dimensions", src)
    if any(not np.isfinite(s) or s <= 0 for s in volume.spacing):
        raise InputError(f"voxel spacing must be positive, got {volume.spacing}", src)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"image must be real-valued, got dtype {data.dtype}", src)
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(f"image has {n_bad} NaN/Inf voxels", src)


def validate_mask(mask: Optional[np.ndarray], volume: Volume) -> Optional[np.ndarray]:
    """Return the ROI as a bool array of the volume's spatial shape, or None for the whole image."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != volume.spatial_shape:
        raise InputError(f"ROI mask shape {mask.shape} differs from the image's {volume.spatial_shape}", volume.source)
    mask = mask != 0
    if not mask.any():
        raise InputError("ROI mask is empty", volume.source)
    return mask
