"""What a refinement reuses: the features of the last fitted volume, so that refitting it with more or
fewer strokes (no new class) retrains only the pointwise clustering head, in a fraction of the first fit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..core.volume import Volume
from .preprocess import Prepared

# Largest feature cache a Segmenter keeps for refinements (float32 bytes); above it a refit retrains the network.
CACHE_BYTES = 2**30


@dataclass
class RefineCache:
    """key: digest of the volume's data, spacing and mask; n_scribble_classes: classes fitted; level: the
    training level (number of halvings); train: the training-level Prepared whose image is the eval-mode
    features (1, q, *crop); full: the full-resolution Prepared; full_features: its ROI voxels' features (q, N)."""

    key: str
    n_scribble_classes: int
    level: int
    train: Prepared
    full: Prepared
    full_features: torch.Tensor

    @staticmethod
    def fits(full_features: torch.Tensor, train_features: torch.Tensor) -> bool:
        """Whether both feature maps together stay within CACHE_BYTES."""
        return (full_features.numel() + train_features.numel()) * 4 <= CACHE_BYTES


def volume_key(volume: Volume, mask) -> str:
    """Digest of a volume's data, spacing and mask: tells a refit of the same volume."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(volume.data).tobytes())
    digest.update(repr(tuple(volume.spacing)).encode())
    if mask is not None:
        digest.update(np.packbits(np.asarray(mask) > 0).tobytes())
    return digest.hexdigest()


def pointwise(features: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """(q, M) voxel features -> (M, q, 1[, 1], 1): a batch of one-voxel images for the pointwise head."""
    return features.T.reshape(tuple(features.shape[::-1]) + (1,) * spatial_dims)


def strokes(full: Prepared, roi_features: torch.Tensor, scribbles, spatial_dims: int):
    """Features and classes of the scribbled ROI voxels at full resolution, as one-voxel images for the
    head: ((M, q, 1, ...), (M, 1, ...)); None without scribbles."""
    if scribbles is None:
        return None
    values = torch.from_numpy(np.asarray(scribbles, np.int64)[full.crop][full.roi[0].numpy()])  # (N,)
    marked = values > 0
    if not marked.any():
        return None
    features = pointwise(roi_features[:, marked], spatial_dims)
    return features, values[marked].reshape((-1,) + tuple(features.shape[2:]))
