"""The training loop: SGD steps of one phase until a stop rule holds.

Phases:
- NETWORK: every layer trains with BatchNorm batch statistics; for the first ``init_iter`` steps the
  targets are an initial clustering of the intensities, afterwards the network's own argmax (self-training).
- HEAD: only the 1x1 clustering head trains, on cached eval-mode features (BatchNorm running statistics),
  with the scribble loss on the strokes' full-resolution features (every fit with strokes of a crop the
  network trained on whole, and every refinement).

Stop rules, checked after every step: "min_labels" (the label count fell to the minimum from above, not
while initialising), "shrank" (HEAD with ``head_shrink``: an output label lost that share of the voxels it had at
the phase's start; the continuity term erodes a thin class step by step and never converges), "converged" (fewer than ``convergence_tol`` of the ROI labels changed over the last
``convergence_window`` steps), else "max_iter".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..core.progress import FitStep, ProgressCallback
from .config import SegmentationConfig
from .losses import ClusteringLoss, scribble_loss
from .patches import PatchSampler, choose_patch_size
from .preprocess import Prepared


@dataclass(frozen=True)
class Phase:
    """What a run of steps trains: the whole network (batch statistics) or only its head (eval mode)."""

    name: str
    batch_statistics: bool


NETWORK = Phase("network", True)
HEAD = Phase("head", False)


class StopRules:
    """The stop rules of one phase, and the share of the run estimated done."""

    def __init__(self, cfg: SegmentationConfig, min_labels: int, max_iter: int):
        self.cfg, self.min_labels, self.max_iter = cfg, min_labels, max_iter
        self.first_n_labels: Optional[int] = None
        self.first_sizes: Optional[torch.Tensor] = None  # (L,) voxels of each output label at the first step
        self.snapshots: Dict[int, torch.Tensor] = {}  # image index -> its labels at the last check
        self.fraction = 0.0

    def fell_to_min_labels(self, n_labels: int, initialising: bool) -> bool:
        if self.first_n_labels is None:
            self.first_n_labels = n_labels
        return n_labels <= self.min_labels < self.first_n_labels and not initialising

    def shrank(self, sizes: torch.Tensor) -> bool:
        """Whether a label has lost ``head_shrink`` of the voxels it had at the first step; sizes: (L,) voxels of
        each output label. Labels under ``min_cluster_fraction`` of the ROI at the first step are not watched."""
        if self.first_sizes is None:
            self.first_sizes = sizes
            return False
        watched = self.first_sizes >= self.cfg.min_cluster_fraction * float(self.first_sizes.sum())
        return bool((sizes[watched] < (1 - self.cfg.head_shrink) * self.first_sizes[watched]).any())

    def is_check(self, iteration: int) -> bool:
        """Convergence is checked every window, and at step 1 (the labels before any step, for warm starts)."""
        return iteration % self.cfg.convergence_window == 0 or iteration == 1

    def changed(self, index: int, labels: torch.Tensor) -> Optional[float]:
        """Share of image ``index``'s labels that changed since its last check (None at its first)."""
        previous, self.snapshots[index] = self.snapshots.get(index), labels
        return None if previous is None else float((previous != labels).float().mean())

    def progress(self, iteration: int, changed: Optional[float]) -> float:
        """Share done: the larger of the steps' share of max_iter and, on a log scale, how far the label
        changes have come down towards the tolerance (1.0 = converged); never decreases."""
        share = iteration / self.max_iter
        tol = self.cfg.convergence_tol
        if changed is not None and tol:  # tol 0 (the reference's settings): no convergence stop, steps only
            share = max(share, min(1.0, math.log(max(changed, tol)) / math.log(tol)))
        self.fraction = max(self.fraction, min(share, 1.0))
        return self.fraction


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    preps: Sequence[Prepared],
    cfg: SegmentationConfig,
    phase: Phase,
    max_iter: int,
    device: torch.device,
    steps_done: int,
    progress: Optional[ProgressCallback] = None,
    strokes=None,
    label_of_channel: Optional[torch.Tensor] = None,
) -> Tuple[List[dict], str]:
    """Run SGD steps of ``model`` in ``phase`` until a stop rule holds; returns (history, stop_reason).

    preps: the images in turn (one step each); for HEAD their images are features (1, q, *crop).
    strokes (HEAD): (features (M, q, 1, 1[, 1]), classes (M, 1, 1[, 1])) of the full-resolution strokes.
    steps_done: the network's training steps before this run (the learning rate decays over them; a head
    phase decays on from where the network stopped, the same for every refinement).
    label_of_channel (HEAD with ``head_shrink``): (q,) int64, the output label of each channel at the phase's
    start; the "shrank" rule watches the label sizes it gives on the training crop.
    Below the voxel budget every step sees one whole crop, otherwise random patches.
    history: one dict per step: iteration, phase, n_labels, loss, similarity, continuity, scribble, and
    changed on the steps that check convergence.
    """
    strokes = None if strokes is None else tuple(t.to(device) for t in strokes)
    loss_fn = ClusteringLoss(cfg.sim_weight, cfg.con_weight, cfg.scr_weight, preps[0].spacing)
    rules = StopRules(cfg, max(cfg.min_labels, drawn_classes(preps, strokes), cfg.n_labels or 0), max_iter)
    whole = all(p.roi.numel() <= cfg.max_voxels for p in preps)
    samplers = None if whole else [_sampler(p, cfg, device, steps_done) for p in preps]
    history: List[dict] = []
    kept = None  # (head with strokes) the start labels, and where they are of a channel no stroke class names
    watch = label_of_channel is not None and bool(cfg.head_shrink) and whole and len(preps) == 1
    label_of_channel = label_of_channel.to(device) if watch else None
    n_out = int(label_of_channel.max()) + 1 if watch else 0
    model.train(phase.batch_statistics)
    # one whole crop (a fit, a head phase on cached features): moved to the device once, not at every step
    resident = _batch(preps[0], None, device) if whole and len(preps) == 1 else None
    for it in range(1, max_iter + 1):
        index = (it - 1) % len(preps)
        batch = resident or _batch(preps[index], None if whole else samplers[index], device)
        image, roi, scr, targets = batch["image"], batch["roi"], batch.get("scribbles"), batch.get("targets")
        if cfg.lr_half_life:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * 0.5 ** ((steps_done + it - 1) / cfg.lr_half_life)
        optimizer.zero_grad(set_to_none=True)
        response = model(image)
        pseudo = response.detach().max(1).indices  # the argmax (first maximum); ~3x faster than argmax(1) on CPU
        n_labels = int(torch.count_nonzero(torch.bincount(pseudo[roi])))  # bincount: no sort, unlike unique
        if strokes is not None and kept is None:  # the head's start: the clusters no stroke names are kept as found
            kept = pseudo.clone(), ~torch.isin(pseudo, torch.unique(strokes[1]) - 1)
        # self-training moves only the stroked classes' voxels (else its continuity merges a small unstroked cluster)
        own = pseudo if kept is None else torch.where(kept[1], kept[0], pseudo)
        initialising = targets is not None and it <= cfg.init_iter
        parts = loss_fn(response, targets if initialising else own, roi, scr)
        if strokes is not None:
            parts["scribble"] = scribble_loss(model(strokes[0]), strokes[1], cfg.scr_min_voxels)
            parts["loss"] = parts["loss"] + cfg.scr_weight * parts["scribble"]
        parts["loss"].backward()
        optimizer.step()
        record: Dict[str, Any] = {
            "iteration": it,
            "phase": phase.name,
            "n_labels": n_labels,
            **{k: float(v.detach()) for k, v in parts.items()},
        }
        history.append(record)
        stop = "min_labels" if rules.fell_to_min_labels(record["n_labels"], initialising) else None
        if stop is None and watch and rules.shrank(torch.bincount(label_of_channel[pseudo[roi]], minlength=n_out)):
            stop = "shrank"
        if stop is None and rules.is_check(it):
            current = pseudo[roi].cpu() if whole else _probe_labels(model, samplers[index], device)
            model.train(phase.batch_statistics)
            changed = rules.changed(index, current)
            if changed is not None:
                record["changed"] = changed
                stop = "converged" if changed < cfg.convergence_tol else None
        if progress:
            progress(
                FitStep(
                    max_iter=max_iter,
                    tolerance=cfg.convergence_tol,
                    fraction=1.0 if stop else rules.progress(it, record.get("changed")),
                    **record,
                )
            )
        if stop:
            return history, stop
    return history, "max_iter"


def drawn_classes(preps: Sequence[Prepared], strokes=None) -> int:
    """How many scribble classes are drawn: the reference's minLabels with scribbles. The ids present count, not
    the largest id (PASCAL VOC strokes of classes 0 and 15 are 2 classes, not 16, so that the network does not
    stop after a few steps at 16 labels)."""
    present = set()
    for prep in preps:
        if prep.scribbles is not None:
            present |= set(torch.unique(prep.scribbles[prep.scribbles > 0]).tolist())
    if strokes is not None:
        present |= set(torch.unique(strokes[1]).tolist())
    return len(present)


def _batch(prep: Prepared, sampler: Optional[PatchSampler], device: torch.device) -> dict:
    """The maps of one step on ``device``: the whole crop, or a batch of random patches."""
    if sampler is None:
        batch = {"image": prep.image, "roi": prep.roi, "scribbles": prep.scribbles, "targets": prep.targets}
    else:
        batch = sampler.sample()
    return {k: (None if v is None else v.to(device)) for k, v in batch.items()}


def _sampler(prep: Prepared, cfg: SegmentationConfig, device: torch.device, steps_done: int) -> PatchSampler:
    size = cfg.patch_size or choose_patch_size(cfg, prep.image.shape[1], prep.image.shape[2:], device)
    maps = {"image": prep.image, "roi": prep.roi, "scribbles": prep.scribbles, "targets": prep.targets}
    return PatchSampler(maps, size, cfg.patch_batch, seed=cfg.seed + steps_done)


@torch.no_grad()
def _probe_labels(model: torch.nn.Module, sampler: PatchSampler, device: torch.device) -> torch.Tensor:
    """Eval-mode labels of a fixed set of patches, to tell whether training has converged."""
    model.eval()
    return model(sampler.probe.to(device)).argmax(1).cpu()


@torch.no_grad()
def calibrate_batchnorm(network: torch.nn.Module, images: Sequence[torch.Tensor]) -> None:
    """Set BatchNorm running statistics to the mean of the batch statistics of ``images`` (each (1, C, *crop),
    the training crops), so that eval-mode prediction normalises as the training steps did (not by a
    lagging moving average)."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the images
    network.train()
    for image in images:
        network(image)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
