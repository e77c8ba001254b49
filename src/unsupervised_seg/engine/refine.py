"""What a refinement reuses: the features of the last fitted volume, so that refitting it with more or
fewer strokes (no new class) retrains only the pointwise clustering head, in a fraction of the first fit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..core.volume import Volume
from .preprocess import Prepared

# Largest feature cache a Segmenter keeps for refinements (float32 bytes); above it a refit retrains the network.
CACHE_BYTES = 2**30


@dataclass
class RefineCache:
    """key: digest of the volume's data, spacing and mask; level: the training level (number of halvings);
    train: the training-level Prepared whose image is the eval-mode features (1, q, *crop); full: the
    full-resolution Prepared; full_features: its ROI voxels' features (q, N). Only a network trained as without
    strokes (its crop seen whole) has a cache, so a refit of the same volume with strokes retrains only the head."""

    key: str
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


@torch.no_grad()
def name_channels(head: torch.nn.Sequential, optimizer: torch.optim.Optimizer, strokes, train: Prepared) -> None:
    """Reorder the head's output channels so that channel k - 1 is the one that holds most of the voxels stroked
    as class k (one-to-one, Hungarian), the convention of the scribble loss and of the label assignment, for a
    network trained without the strokes. A class no channel holds takes the channel with fewest voxels.

    head: conv 1^d (q -> q) then BatchNorm; every parameter and buffer with q rows, and its momentum in
    ``optimizer``, is reordered, so the head computes the same responses in the new order.
    strokes: (features (M, q, 1, ...), classes (M, 1, ...)) as ``strokes`` returns them; train: the training
    level's Prepared whose image is the features (1, q, *crop) (channel sizes for ties).
    """
    features, classes = strokes
    device = next(head.parameters()).device  # the cached features stay on the CPU; the head may be on a GPU
    head.eval()
    stroked = head(features.to(device)).flatten(1).argmax(1).cpu()  # (M,)
    q = features.shape[1]
    channel_map = head(train.image.to(device)).argmax(1).cpu()
    sizes = torch.bincount(channel_map[train.roi], minlength=q).double()
    overlap = torch.zeros(q, int(classes.max()), dtype=torch.float64)
    overlap.index_put_((stroked, classes.flatten() - 1), torch.ones(len(stroked), dtype=torch.float64), accumulate=True)
    cost = -overlap + (sizes / (sizes.sum() + 1))[:, None]  # ties (no overlap): the smaller channel
    channels, named = linear_sum_assignment(cost.numpy())
    order = np.full(q, -1)
    order[named] = channels
    order[order < 0] = [c for c in range(q) if c not in set(channels.tolist())][: int(np.sum(order < 0))]
    index = torch.from_numpy(order).to(device)
    for tensor in list(head.parameters()) + list(head.buffers()):
        if tensor.ndim and tensor.shape[0] == q:
            tensor.copy_(tensor[index])
            momentum = optimizer.state.get(tensor, {}).get("momentum_buffer")
            if momentum is not None:
                momentum.copy_(momentum[index])
