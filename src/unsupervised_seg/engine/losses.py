"""Losses of differentiable feature clustering: similarity, spatial continuity, scribbles."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def similarity_loss(
    response: torch.Tensor,
    pseudo_labels: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    class_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy of the response (logits) against the argmax pseudo-labels.

    response: (B, q, *spatial); pseudo_labels: (B, *spatial) long; weight: (B, *spatial) float,
    1 where a voxel counts (inside the ROI, unscribbled), 0 elsewhere, or None for all voxels.
    class_weights: (q,) optional per-cluster weights. Returns the weighted mean, a scalar.
    """
    ce = F.cross_entropy(response, pseudo_labels, weight=class_weights, reduction="none")
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1.0)


class _WeightedMeanAbsDiffs(torch.autograd.Function):
    """sum over spatial axes a of weights[a] * mean |r[i+1] - r[i]| along a, with the same values and gradients as
    summing ``torch.diff(r, dim=a).abs().mean()``. The loss is linear in the signs s of the differences, so its
    gradient g is filled in the forward pass (s[i - 1] - s[i] per axis, weighted) and the loss is the dot product
    of g and r (sum_i s[i] * (r[i+1] - r[i]) = sum_i |r[i+1] - r[i]|); the backward only scales g. On a chest
    CT's (1, 32, 34, 99, 128) response, forward and backward take 0.26 s where saving the signs for the backward
    took 0.45 s (2 CPU threads; benchmarks/RESULTS.md): a head step's most expensive part."""

    @staticmethod
    def forward(ctx, response: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
        grad = torch.zeros_like(response, memory_format=torch.contiguous_format)  # d loss / d response
        for axis, weight in enumerate(weights, start=2):
            n = response.shape[axis] - 1
            sign = torch.sub(response.narrow(axis, 1, n), response.narrow(axis, 0, n)).sign_()
            scale = weight / sign.numel()
            grad.narrow(axis, 1, n).add_(sign, alpha=scale)  # d/dr[i+1] of |r[i+1] - r[i]|
            grad.narrow(axis, 0, n).sub_(sign, alpha=scale)  # d/dr[i]
        ctx.save_for_backward(grad)
        return torch.dot(grad.reshape(-1), response.reshape(-1))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None


def continuity_loss(response: torch.Tensor, spacing: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Spatial continuity: sum over spatial axes of the mean |r[i+1] - r[i]| along that axis.

    response: (B, q, *spatial). With ``spacing`` (one value per spatial axis) each axis' term
    is weighted by min(spacing) / spacing[axis], so that differences between voxels further
    apart (anisotropic volumes) count less; isotropic data gives the reference loss.
    """
    dims = response.ndim - 2
    weights = [1.0] * dims if spacing is None else [min(spacing) / s for s in spacing]
    return _WeightedMeanAbsDiffs.apply(response, weights)


def scribble_loss(response: torch.Tensor, scribbles: torch.Tensor, min_voxels: int = 1) -> torch.Tensor:
    """Class-balanced cross-entropy on the scribbled voxels whose label is still wrong: the mean over the stroked
    classes of each class's summed cross-entropy of its wrong voxels over its stroked voxels (at least
    ``min_voxels``). A class painted over 20x more voxels does not drown a small one, a class stroked on 3 voxels
    does not pull as hard as one stroked on hundreds, and the loss stops where the strokes are labelled right:
    it moves a boundary just as far as the strokes need, not on until the stroked intensities are certain (a
    stroke through partial-volume voxels otherwise grows its class everywhere alike; benchmarks/RESULTS.md).

    response: (B, q, *spatial); scribbles: (B, *spatial) long, 0 = unlabelled, k >= 1 = class k,
    which is trained towards response channel k - 1. Returns 0 when nothing is scribbled or all is right.
    """
    marked = scribbles > 0
    if not marked.any():
        return response.new_zeros(())
    logits = response.movedim(1, -1)[marked]  # (n_marked, q)
    target = scribbles[marked] - 1
    counts = torch.bincount(target, minlength=logits.shape[1]).to(logits.dtype)
    wrong = logits.detach().argmax(1) != target
    cross_entropy = F.cross_entropy(logits, target, reduction="none")
    return (cross_entropy * wrong / counts.clamp_min(min_voxels)[target]).sum() / torch.count_nonzero(counts)


class ClusteringLoss(nn.Module):
    """L = mu * L_sim + nu * L_con + lambda * L_scr (Kim, Kanezaki & Tanaka 2020, eq. 4; mu, nu, lambda), returning the parts too."""

    def __init__(
        self,
        sim_weight: float = 1.0,
        con_weight: float = 1.0,
        scr_weight: float = 0.5,
        spacing: Optional[Sequence[float]] = None,
    ):
        super().__init__()
        self.sim_weight, self.con_weight, self.scr_weight = sim_weight, con_weight, scr_weight
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def forward(
        self,
        response: torch.Tensor,
        pseudo_labels: torch.Tensor,
        roi: Optional[torch.Tensor] = None,
        scribbles: Optional[torch.Tensor] = None,
        class_weights: Optional[torch.Tensor] = None,
    ) -> dict:
        """response (B, q, *spatial); pseudo_labels, scribbles (B, *spatial) long; roi (B, *spatial) bool.

        Returns {"loss", "similarity", "continuity", "scribble"} scalars.
        """
        weight = None if roi is None else roi.float()
        if scribbles is not None:
            unmarked = (scribbles == 0).float()
            weight = unmarked if weight is None else weight * unmarked
        sim = similarity_loss(response, pseudo_labels, weight, class_weights)
        con = continuity_loss(response, self.spacing)
        scr = scribble_loss(response, scribbles) if scribbles is not None else response.new_zeros(())
        loss = self.sim_weight * sim + self.con_weight * con + self.scr_weight * scr
        return {"loss": loss, "similarity": sim.detach(), "continuity": con.detach(), "scribble": scr.detach()}
