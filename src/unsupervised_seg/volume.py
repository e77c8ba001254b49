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
    def from_array(cls, array, spacing: Sequence[float] = (), channel_axis: Optional[int] = None, **kw) -> "Volume":
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
            f"({data.ndim - 1} spatial dimensions; 4D series need sequence mode)", src)
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


def normalise_intensity(volume: Volume, roi: Optional[np.ndarray], lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Map each channel's [lower, upper] percentile inside the ROI to [0, 1], clipped.

    Works alike for CT (Hounsfield units) and MR (arbitrary units). Voxels outside the ROI
    are set to the ROI median so that they neither form a cluster nor distort statistics.

    Returns (C, *spatial) float32. Raises InputError for a constant image.
    """
    data = volume.data.astype(np.float32, copy=True)
    for c in range(data.shape[0]):
        channel = data[c]
        inside = channel[roi] if roi is not None else channel.ravel()
        lo, hi = np.percentile(inside, [lower, upper])
        if hi <= lo:  # heavy-tailed or nearly constant: fall back to the full range
            lo, hi = float(inside.min()), float(inside.max())
        if hi <= lo:
            where = " inside the ROI" if roi is not None else ""
            raise InputError(f"channel {c} is constant{where} (value {lo:g}): nothing to segment", volume.source)
        channel -= lo
        channel /= hi - lo
        np.clip(channel, 0.0, 1.0, out=channel)
        if roi is not None:
            channel[~roi] = np.median(channel[roi])
    return data


def halve_resolution(volume: Volume, scribbles: Optional[np.ndarray], mask: Optional[np.ndarray]):
    """The volume at half resolution (2x2(x2) blocks), for coarse-to-fine fitting.

    Image: block means; spacing doubles. Mask: blocks at least half inside. Scribbles: the largest
    class id in each block, so that one-voxel-thin strokes survive. Shapes round up.
    Returns (Volume (C, *ceil(spatial / 2)), scribbles or None, mask or None).
    """
    import torch
    import torch.nn.functional as F

    dims = volume.spatial_dims
    avg, peak = (F.avg_pool2d, F.max_pool2d) if dims == 2 else (F.avg_pool3d, F.max_pool3d)

    def pool(array, op, dtype=torch.float32):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
        if op is avg:  # mean over the voxels that exist (edge blocks may be partial)
            return avg(tensor[None], 2, ceil_mode=True, count_include_pad=False)[0].numpy()
        return op(tensor[None], 2, ceil_mode=True)[0].numpy()

    data = pool(volume.data, avg)
    coarse_mask = None if mask is None else pool(np.asarray(mask, np.float32)[None], avg)[0] >= 0.5
    if coarse_mask is not None and not coarse_mask.any():
        coarse_mask = pool(np.asarray(mask, np.float32)[None], peak)[0] > 0
    coarse_scribbles = None if scribbles is None else pool(np.asarray(scribbles)[None], peak, torch.float64)[0]
    coarse = Volume(data, tuple(2 * s for s in volume.spacing), None, volume.source)
    return coarse, None if coarse_scribbles is None else coarse_scribbles.astype(np.int64), coarse_mask
