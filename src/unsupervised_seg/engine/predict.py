"""Prediction with a trained network: eval-mode features of a crop and the clustering head's argmax channels."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..core.progress import Predicting, ProgressCallback
from .config import SegmentationConfig
from .network import ClusteringNet
from .patches import choose_patch_size, sliding_window_response
from .preprocess import Prepared
from .refine import pointwise

# Voxels per chunk when the pointwise head is applied to cached ROI features.
_HEAD_CHUNK = 2**20


@torch.no_grad()
def features(
    network: ClusteringNet,
    prep: Prepared,
    cfg: SegmentationConfig,
    device: torch.device,
    progress: Optional[ProgressCallback] = None,
) -> torch.Tensor:
    """Eval-mode features (q, *crop) of the crop, on the CPU; sliding window above the voxel budget."""
    network.eval()
    if prep.roi.numel() <= cfg.max_voxels:
        return network.features(prep.image.to(device))[0].cpu()
    size = cfg.patch_size or choose_patch_size(cfg, prep.image.shape[1], prep.image.shape[2:], device)
    if progress:
        progress(Predicting(list(size)))
    return sliding_window_response(network.features, prep.image, size, cfg, device)


@torch.no_grad()
def head_channels(
    network: ClusteringNet, prep: Prepared, roi_features: torch.Tensor, device: torch.device
) -> np.ndarray:
    """Argmax channels of the eval-mode head: (q, N) ROI features -> (*crop) int64, 0 outside the ROI."""
    network.eval()
    dims = network.spatial_dims
    channels = torch.cat(
        [
            network.head(pointwise(chunk.to(device), dims)).flatten(1).argmax(1).cpu()
            for chunk in roi_features.split(_HEAD_CHUNK, dim=1)
        ]
    )
    crop = torch.zeros(prep.roi.shape[1:], dtype=torch.long)
    crop[prep.roi[0]] = channels
    return crop.numpy()
