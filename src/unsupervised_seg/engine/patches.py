"""Large volumes: random training patches, patch size from the memory available, sliding-window prediction."""

from __future__ import annotations

import logging
from typing import Sequence, Tuple

import torch

from .device import available_memory

log = logging.getLogger(__name__)

# Bytes per voxel and response channel held during a training step (activations of each
# conv/ReLU/BN block and the head, their gradients and the loss' temporaries), float32.
_TRAIN_BYTES_PER_VOXEL_CHANNEL = 4 * 12


def choose_patch_size(cfg, in_channels: int, shape: Sequence[int], device: torch.device) -> Tuple[int, ...]:
    """Cubic (square) patch edge so that ``cfg.patch_batch`` patches fit the memory budget,
    between 16 and 96 voxels and no larger than the volume."""
    per_voxel = _TRAIN_BYTES_PER_VOXEL_CHANNEL * cfg.n_clusters * max(cfg.n_conv, 1) + 4 * in_channels
    voxels = available_memory(device) / (per_voxel * cfg.patch_batch)
    edge = int(voxels ** (1.0 / len(shape)))
    edge = max(16, min(edge, 96))
    return tuple(min(edge, int(n)) for n in shape)


class PatchSampler:
    """Draws batches of random patches whose centres lie in the ROI, with scribbled voxels over-sampled
    (they get half of the sampling weight when present).

    maps: {"image": (1, C, *S) float32, "roi": (1, *S) bool, optional "scribbles"/"targets": (1, *S) long}.
    sample() -> the same keys, batched: image (B, C, *P), the others (B, *P).
    probe: a fixed image batch (B, C, *P) used to check convergence.
    """

    def __init__(self, maps: dict, patch_size: Sequence[int], batch: int, seed: int = 0):
        image, roi = maps["image"], maps["roi"]
        self.n_channels = image.shape[1]
        self.label_keys = [k for k in ("roi", "scribbles", "targets") if maps.get(k) is not None]
        weight = roi.float()
        if maps.get("scribbles") is not None:
            marked = maps["scribbles"] > 0
            weight = weight + marked.float() * (roi.sum() / marked.sum().clamp_min(1))
        self.stacked = torch.cat([image[0]] + [maps[k].float() for k in self.label_keys], 0)  # (C + n, *S)
        self.weight = weight
        from monai.transforms import RandWeightedCrop  # imported here: MONAI is slow to import

        self.cropper = RandWeightedCrop(tuple(int(p) for p in patch_size), num_samples=batch)
        self.cropper.set_random_state(seed)
        self.probe = self.sample()["image"]

    def sample(self) -> dict:
        crops = self.cropper(self.stacked, weight_map=self.weight)
        batch = torch.stack([torch.as_tensor(c) for c in crops])
        c = self.n_channels
        out = {"image": batch[:, :c].float().contiguous()}
        for i, key in enumerate(self.label_keys):
            layer = batch[:, c + i]
            out[key] = layer > 0.5 if key == "roi" else layer.round().long()
        return out


def sliding_window_response(
    network: torch.nn.Module, image: torch.Tensor, patch_size: Sequence[int], cfg, device: torch.device
) -> torch.Tensor:
    """Eval-mode response of ``network`` on image (1, C, *S) by overlapping patches with gaussian
    blending (MONAI SlidingWindowInferer); the full response is accumulated on the CPU.
    On CUDA out-of-memory the patch edge is halved and the prediction retried. Returns (q, *S)."""
    from monai.inferers import SlidingWindowInferer  # imported here: MONAI is slow to import

    size = tuple(patch_size)
    while True:
        inferer = SlidingWindowInferer(
            roi_size=size,
            sw_batch_size=cfg.patch_batch,
            overlap=cfg.sw_overlap,
            mode="gaussian",
            sw_device=device,
            device=torch.device("cpu"),
            progress=False,
        )
        try:
            return inferer(image, network)[0]
        except torch.cuda.OutOfMemoryError:
            if min(size) <= 16:
                raise
            torch.cuda.empty_cache()
            size = tuple(max(16, s // 2) for s in size)
            log.warning("CUDA out of memory in prediction; retrying with patches of %s", size)
