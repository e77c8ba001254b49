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
    """sum over spatial axes a of weights[a] * mean |r[i+1] - r[i]| along a, with a hand-written backward that
    fills one gradient tensor for all axes: the same values and gradients as summing
    ``torch.diff(r, dim=a).abs().mean()`` in about 60 % of the time (it is the most expensive part of a training
    step after the convolutions, and of a head step the most expensive of all)."""

    @staticmethod
    def forward(ctx, response: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
        total = response.new_zeros(())
        signs = []
        for axis, weight in enumerate(weights, start=2):
            diff = torch.diff(response, dim=axis)
            total = total + weight * diff.abs().mean()
            signs.append(diff.sign_())
        ctx.save_for_backward(*signs)
        ctx.weights = tuple(weights)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        signs = ctx.saved_tensors
        shape = list(signs[0].shape)
        shape[2] += 1
        grad = signs[0].new_zeros(shape)
        for axis, (sign, weight) in enumerate(zip(signs, ctx.weights), start=2):
            step = sign * (grad_output * weight / sign.numel())
            n = step.shape[axis]
            grad.narrow(axis, 1, n).add_(step)  # d/dr[i+1] of |r[i+1] - r[i]|
            grad.narrow(axis, 0, n).sub_(step)  # d/dr[i]
        return grad, None


def continuity_loss(response: torch.Tensor, spacing: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Spatial continuity: sum over spatial axes of the mean |r[i+1] - r[i]| along that axis.

    response: (B, q, *spatial). With ``spacing`` (one value per spatial axis) each axis' term
    is weighted by min(spacing) / spacing[axis], so that differences between voxels further
    apart (anisotropic volumes) count less; isotropic data gives the reference loss.
    """
    dims = response.ndim - 2
    weights = [1.0] * dims if spacing is None else [min(spacing) / s for s in spacing]
    return _WeightedMeanAbsDiffs.apply(response, weights)


def scribble_loss(response: torch.Tensor, scribbles: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy on the scribbled voxels whose label is still wrong: the mean over the stroked
    classes of each class's summed cross-entropy of its wrong voxels over its stroked voxels. A class painted
    over 20x more voxels does not drown a small one, and the loss stops where the strokes are labelled right:
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
    return (cross_entropy * wrong / counts[target]).sum() / torch.count_nonzero(counts)


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
