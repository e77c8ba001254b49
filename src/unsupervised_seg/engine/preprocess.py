"""Preprocessing of a Volume for the network: intensity normalisation, ROI crop, initial targets, coarse levels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
import torch

from ..core.errors import InputError
from ..core.scribbles import scribble_classes, validate_scribbles
from ..core.volume import Volume, validate_mask, validate_volume
from .config import SegmentationConfig
from .initialisation import initial_channels, label_changes

log = logging.getLogger(__name__)


def normalise_intensity(
    volume: Volume,
    roi: Optional[np.ndarray],
    lower: float = SegmentationConfig.lower_percentile,
    upper: Optional[float] = None,
) -> np.ndarray:
    """Map each channel's [lower, upper] percentile inside the ROI to [0, 1], clipped (upper None: the
    SegmentationConfig default for the volume's dimensions).

    Works alike for CT (Hounsfield units) and MR (arbitrary units). Voxels outside the ROI
    are set to the ROI median so that they neither form a cluster nor distort statistics.

    Returns (C, *spatial) float32. Raises InputError for a constant image.
    """
    if upper is None:
        upper = SegmentationConfig().resolved(volume.spatial_dims).upper_percentile
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


def halving_factors(spacing, max_spacing: float = 0.0) -> tuple:
    """Per axis 2 (halve) or 1 (keep): an axis is halved unless that would make its voxels coarser than
    ``max_spacing`` (0: no limit). Thin structures vanish on a coarse grid: ribs on a 3 x 3 x 10 mm chest CT
    halved to 6 x 6 x 20 mm (bone Dice 0.00; 0.53 at full resolution, benchmarks/RESULTS.md)."""
    return tuple(2 if not max_spacing or 2 * s <= max_spacing * (1 + 1e-6) else 1 for s in spacing)


def halve_resolution(
    volume: Volume, scribbles: Optional[np.ndarray], mask: Optional[np.ndarray], factors: Optional[tuple] = None
):
    """The volume at half resolution along the axes where ``factors`` is 2 (default: every axis), for
    coarse-to-fine fitting.

    Image: block means; spacing doubles. Mask: blocks at least half inside. Scribbles: the largest
    class id in each block, so that one-voxel-thin strokes survive. Shapes round up.
    Returns (Volume (C, *ceil(spatial / factors)), scribbles or None, mask or None).
    """
    from monai.networks.layers.factories import Pool

    dims = volume.spatial_dims
    factors = factors or (2,) * dims
    # mean over the voxels that exist (edge blocks may be partial); peak: the largest value of a block
    avg = Pool[Pool.AVG, dims](factors, ceil_mode=True, count_include_pad=False)
    peak = Pool[Pool.MAX, dims](factors, ceil_mode=True)

    def pool(array, op, dtype=torch.float32):
        return op(torch.from_numpy(np.ascontiguousarray(array)).to(dtype)[None])[0].numpy()

    data = pool(volume.data, avg)
    coarse_mask = None if mask is None else pool(np.asarray(mask, np.float32)[None], avg)[0] >= 0.5
    if coarse_mask is not None and not coarse_mask.any():
        coarse_mask = pool(np.asarray(mask, np.float32)[None], peak)[0] > 0
    coarse_scribbles = None if scribbles is None else pool(np.asarray(scribbles)[None], peak, torch.float64)[0]
    coarse = Volume(data, tuple(f * s for f, s in zip(factors, volume.spacing)), None, volume.source)
    return coarse, None if coarse_scribbles is None else coarse_scribbles.astype(np.int64), coarse_mask


@dataclass
class Prepared:
    """One volume ready for the network, cropped to the ROI's bounding box.

    image:      (1, C, *crop) float32, normalised intensities; or (1, q, *crop) features when the clustering
                head trains on cached features (see refine.py).
    scribbles:  (1, *crop) long, 0 = unlabelled, or None.
    roi:        (1, *crop) bool.
    targets:    (1, *crop) long initial clustering (response-channel ids) the network is first fitted to, or None.
    crop:       slices of the crop in the full grid; full_shape: the full (*spatial) shape;
    full_roi:   (*spatial) bool; spacing: voxel size per spatial axis; n_scribble_classes: scribble classes (K).
    """

    image: torch.Tensor
    scribbles: Optional[torch.Tensor]
    roi: torch.Tensor
    targets: Optional[torch.Tensor]
    crop: tuple
    full_shape: tuple
    full_roi: np.ndarray
    spacing: tuple
    n_scribble_classes: int


def prepare(volume: Volume, scribbles, mask, cfg: SegmentationConfig, targets: bool = True) -> Prepared:
    """Validate, normalise and crop ``volume`` (C, *spatial) for ``cfg`` (resolved for its dims).

    scribbles: (*spatial) int or None; mask: (*spatial) ROI or None. Without a mask the ROI is the whole
    image; scribbled voxels outside a mask are dropped (with a warning). ``targets``: also cluster the
    intensities (cfg.init) for the initial fit.
    """
    validate_volume(volume)
    roi = validate_mask(mask, volume)
    scribbles = validate_scribbles(scribbles, volume.spatial_shape, cfg.n_clusters, volume.source)
    full_roi = np.ones(volume.spatial_shape, bool) if roi is None else roi
    if scribbles is not None and roi is not None and np.any((scribbles > 0) & ~roi):
        log.warning("%s: scribbled voxels outside the ROI are ignored", volume.source)
        scribbles = np.where(roi, scribbles, 0)
    data = normalise_intensity(volume, roi, cfg.lower_percentile, cfg.upper_percentile)
    crop = bounding_box(full_roi, margin=2)
    image = torch.from_numpy(np.ascontiguousarray(data[(slice(None),) + crop]))[None]
    roi_t = torch.from_numpy(np.ascontiguousarray(full_roi[crop]))[None]
    scr_t = None if scribbles is None else torch.from_numpy(np.ascontiguousarray(scribbles[crop]))[None]
    n_classes = scribble_classes(scribbles)
    prep = Prepared(image, scr_t, roi_t, None, crop, volume.spatial_shape, full_roi, volume.spacing, n_classes)
    if targets and cfg.init != "none" and cfg.init_iter > 0:  # warm starts too: new scribble classes need targets
        k = cfg.init_clusters or cfg.n_labels or cfg.min_labels
        crop_scr = None if scribbles is None else scribbles[crop]
        prep.targets = torch.from_numpy(
            initial_channels(cfg.init, image[0].numpy(), roi_t[0].numpy(), k, crop_scr, n_classes, cfg.seed)
        )[None]
    return prep


def training_level(volume: Volume, scribbles, mask, coarse_voxels: int, max_spacing: float = 0.0):
    """Coarse to fine: halve (volume, scribbles, mask) until the ROI's box holds at most ``coarse_voxels``
    voxels (0: never) or no axis may be halved without voxels coarser than ``max_spacing`` (0: no limit).
    The network trains there and predicts at full resolution unchanged.

    Expects validated input. Returns (volume, scribbles, mask, number of halvings).
    """
    level = 0
    while True:
        factors = halving_factors(volume.spacing, max_spacing)
        if not coarse_voxels or _box_voxels(volume, mask) <= coarse_voxels or max(factors) == 1:
            return volume, scribbles, mask, level
        volume, scribbles, mask = halve_resolution(volume, scribbles, mask, factors)
        level += 1


def _box_voxels(volume: Volume, mask) -> int:
    """Voxels of the crop the network sees: the ROI's bounding box (margin 2), or the whole grid."""
    roi = validate_mask(mask, volume)
    box = volume.spatial_shape if roi is None else [s.stop - s.start for s in bounding_box(roi, margin=2)]
    return int(np.prod(box))


def training_preps(volume: Volume, scribbles, mask, cfg: SegmentationConfig) -> Tuple[Prepared, Prepared, int]:
    """(the Prepared the network trains on, the full-resolution Prepared, halvings between them).

    Coarse to fine trades resolution for less noise. It pays where the initial clustering at full resolution
    is noisy (MR: 0.08-0.22 label changes per mm on the development set; MNI152 2 mm Dice 0.894 coarse,
    0.871 at full resolution) and loses where it is already coherent (CT: 0.02-0.05; head CT 0.815 coarse,
    0.914 at full resolution): below ``cfg.coarse_min_changes`` label changes per mm (label_changes over
    the geometric mean voxel size) the network trains at full resolution. See benchmarks/RESULTS.md.
    """
    judged = bool(cfg.coarse_min_changes)  # else (2D, reference) the full-resolution clustering is not needed
    # A crop trained whole trains as without strokes: the clustering head learns them afterwards on the
    # full-resolution features (Segmenter.fit). Only a crop trained on patches (no head phase) trains on them.
    n_classes = scribble_classes(validate_scribbles(scribbles, volume.spatial_shape, cfg.n_clusters, volume.source))
    if _box_voxels(volume, mask) <= cfg.max_voxels:
        scribbles = None
    full = prepare(volume, scribbles, mask, cfg, targets=judged)
    if full.targets is not None and judged:
        per_mm = label_changes(full.targets[0].numpy(), full.roi[0].numpy()) / float(np.prod(full.spacing)) ** (
            1 / len(full.spacing)
        )
        if per_mm < cfg.coarse_min_changes:
            log.info(
                "%s: coherent initial clustering (%.3f label changes per mm): full resolution", volume.source, per_mm
            )
            return full, replace(full, n_scribble_classes=n_classes), 0
    coarse, coarse_scribbles, coarse_mask, level = training_level(
        volume, scribbles, mask, cfg.coarse_voxels, cfg.coarse_max_spacing
    )
    if level == 0:
        full = full if judged else prepare(volume, scribbles, mask, cfg)
        return full, replace(full, n_scribble_classes=n_classes), 0
    if _box_voxels(coarse, coarse_mask) <= cfg.max_voxels:
        # trained whole: as without strokes (block-pooled strokes are wrong labels at a coarse level, too: a
        # block's largest class id, so a CSF line through a ventricle's rim marks blocks of mostly grey matter)
        coarse_scribbles = None
    return (
        prepare(coarse, coarse_scribbles, coarse_mask, cfg),
        replace(full, targets=None, n_scribble_classes=n_classes),
        level,
    )


def bounding_box(mask: np.ndarray, margin: int) -> tuple:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    coords = np.nonzero(mask)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n)) for c, n in zip(coords, mask.shape)
    )


def in_roi(features: torch.Tensor, prep: Prepared) -> torch.Tensor:
    """(q, *crop) features -> (q, N) of the N ROI voxels; without a mask (ROI = the whole crop) a view."""
    flat, roi = features.reshape(features.shape[0], -1), prep.roi[0].flatten()
    return flat if bool(roi.all()) else flat[:, roi]
