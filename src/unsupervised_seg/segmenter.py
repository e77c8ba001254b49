"""Segmenter: test-time optimisation of a ClusteringNet on one volume (or a set), and prediction."""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .config import SegmentationConfig
from .errors import InputError
from .initialisation import initial_channels
from .labels import assign_labels
from .losses import ClusteringLoss, scribble_loss
from .network import ClusteringNet
from .patches import PatchSampler, choose_patch_size, sliding_window_response
from .scribbles import scribble_classes, validate_scribbles
from .volume import Volume, halve_resolution, normalise_intensity, validate_mask, validate_volume

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict], None]


@dataclass
class SegmentationResult:
    """Outcome of a fit or predict.

    labels:      (*spatial) int32 on the input grid; 1..K inside the ROI, 0 outside. Scribble class
                 k is label k; other clusters follow, ordered by mean intensity.
    n_labels:    number of distinct labels inside the ROI.
    iterations:  optimisation steps taken (0 for predict).
    stop_reason: "min_labels", "converged", "max_iter" or "predict".
    history:     one dict per iteration: iteration, phase ("network", or "head" when only the clustering
                 head trains on cached features), loss, similarity, continuity, scribble, n_labels, and
                 level (number of halvings) when trained coarse to fine.
    """

    labels: np.ndarray
    n_labels: int
    iterations: int
    stop_reason: str
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
    return device


@dataclass
class _Prepared:
    """One volume ready for the network, cropped to the ROI's bounding box.

    image (1, C, *crop) float32; scribbles (1, *crop) long or None; roi (1, *crop) bool; targets below;
    crop: slices of the crop in the full grid; full_roi: (*spatial) bool.
    """

    image: torch.Tensor
    scribbles: Optional[torch.Tensor]
    roi: torch.Tensor
    targets: Optional[torch.Tensor]  # (1, *crop) long: initial clustering (channel ids) or None
    crop: tuple
    full_shape: tuple
    full_roi: np.ndarray
    spacing: tuple
    n_scribble_classes: int


# Largest feature cache a Segmenter keeps for refinements (float32 bytes); above it a refit retrains the network.
_CACHE_BYTES = 2 ** 30
# Voxels per chunk when the pointwise head is applied to cached ROI features.
_HEAD_CHUNK = 2 ** 20


@dataclass
class _RefineCache:
    """What a refinement of the same volume reuses: its key (image, spacing and mask digest), the number of
    scribble classes fitted, the training level (number of halvings), the training-level prep whose image
    is the eval-mode features (1, q, *crop), and the full-resolution prep with its ROI voxels' features (q, N)."""

    key: str
    n_scribble_classes: int
    level: int
    train: _Prepared
    full: _Prepared
    full_features: torch.Tensor


class Segmenter:
    """Stateful test-time clustering: the network and optimiser persist between calls.

    fit(volume, scribbles, mask)  -> SegmentationResult; a second fit warm-starts from the first
                                     (on the same volume without new scribble classes only the
                                     clustering head is retrained, on cached features: a refinement).
    fit_reference([volumes])      -> trains one network on several images (reference mode).
    predict(volume, mask)         -> labels without optimisation, consistent with the fit.
    save(path) / Segmenter.load(path).
    """

    def __init__(self, config: Optional[SegmentationConfig] = None, **overrides):
        config = config or SegmentationConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.device = resolve_device(self.config.device)
        self.network: Optional[ClusteringNet] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.channel_to_label: Optional[np.ndarray] = None  # (q,) int: output label of each response channel
        self.iterations_done = 0  # the network's training steps so far (the learning rate decays over them)
        self._cache: Optional[_RefineCache] = None

    # ------------------------------------------------------------------ set-up
    def _prepare(self, volume: Volume, scribbles=None, mask=None, targets: bool = True) -> _Prepared:
        """Validate, normalise and crop; ``targets``: also cluster the intensities for the initial fit."""
        validate_volume(volume)
        roi = validate_mask(mask, volume)
        cfg = self.config.resolved(volume.spatial_dims)
        scribbles = validate_scribbles(scribbles, volume.spatial_shape, cfg.n_clusters, volume.source)
        if self.network is not None:
            if volume.spatial_dims != self.network.spatial_dims or volume.n_channels != self.network.in_channels:
                raise InputError(
                    f"image has {volume.spatial_dims} spatial dims and {volume.n_channels} channels; the network was "
                    f"made for {self.network.spatial_dims} and {self.network.in_channels}", volume.source)
        full_roi = np.ones(volume.spatial_shape, bool) if roi is None else roi
        if scribbles is not None:
            full_roi = full_roi | (scribbles > 0) if roi is None else full_roi
            if roi is not None and np.any((scribbles > 0) & ~roi):
                log.warning("%s: scribbled voxels outside the ROI are ignored", volume.source)
                scribbles = np.where(roi, scribbles, 0)
        data = normalise_intensity(volume, roi, cfg.lower_percentile, cfg.upper_percentile)
        crop = _bounding_box(full_roi, margin=2)
        image = torch.from_numpy(np.ascontiguousarray(data[(slice(None),) + crop]))[None]
        roi_t = torch.from_numpy(np.ascontiguousarray(full_roi[crop]))[None]
        scr_t = None if scribbles is None else torch.from_numpy(np.ascontiguousarray(scribbles[crop]))[None]
        n_classes = scribble_classes(scribbles)
        prep = _Prepared(image, scr_t, roi_t, None, crop, volume.spatial_shape, full_roi, volume.spacing, n_classes)
        if targets and cfg.init != "none" and cfg.init_iter > 0:  # warm starts too: new scribble classes need targets
            k = cfg.init_clusters or cfg.n_labels or cfg.min_labels
            crop_scr = None if scribbles is None else scribbles[crop]
            prep.targets = torch.from_numpy(initial_channels(cfg.init, image[0].numpy(), roi_t[0].numpy(), k,
                                                             crop_scr, n_classes, cfg.seed))[None]
        return prep

    def _ensure_network(self, spatial_dims: int, in_channels: int) -> SegmentationConfig:
        cfg = self.config.resolved(spatial_dims)
        if self.network is None:
            torch.manual_seed(cfg.seed)
            self.network = ClusteringNet(spatial_dims, in_channels, cfg.n_clusters, cfg.n_conv).to(self.device)
            self.optimizer = torch.optim.SGD(self.network.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        return cfg

    def _training_level(self, volume: Volume, scribbles, mask):
        """Coarse to fine: halve (volume, scribbles, mask) until the ROI's box holds at most ``coarse_voxels``
        voxels (0: never). The network trains there and predicts at full resolution unchanged.

        Expects validated input. Returns (volume, scribbles, mask, number of halvings).
        """
        coarse_voxels = self.config.resolved(volume.spatial_dims).coarse_voxels
        level = 0
        while True:
            roi = validate_mask(mask, volume)
            box = volume.spatial_shape if roi is None else [s.stop - s.start for s in _bounding_box(roi, margin=2)]
            if not coarse_voxels or int(np.prod(box)) <= coarse_voxels:
                return volume, scribbles, mask, level
            volume, scribbles, mask = halve_resolution(volume, scribbles, mask)
            level += 1

    # ------------------------------------------------------------------ training
    def fit(self, volume: Volume, scribbles=None, mask=None, max_iter: Optional[int] = None,
            progress: Optional[ProgressCallback] = None, keep_labels: bool = False) -> SegmentationResult:
        """Optimise the network on ``volume`` (warm-starting from any previous fit) and segment it.

        volume: Volume (C, *spatial); scribbles: (*spatial) int, 0 = unlabelled; mask: (*spatial) ROI.
        keep_labels: keep the channel -> label mapping of the previous fit (sequence mode).
        Refitting the volume of the previous fit with scribbles of no new class (the user added or erased
        strokes) retrains only the clustering head on the cached features of that fit: a refinement in
        a fraction of the first fit's time. The cache travels with ``save`` / ``load``.
        """
        start = time.perf_counter()
        validate_volume(volume)
        cfg = self.config.resolved(volume.spatial_dims)
        validate_mask(mask, volume)
        n_classes = scribble_classes(validate_scribbles(scribbles, volume.spatial_shape, cfg.n_clusters,
                                                        volume.source))
        key, cache = _volume_key(volume, mask), self._cache
        refining = (cache is not None and cache.key == key and 0 < n_classes <= cache.n_scribble_classes
                    and not keep_labels)
        history, stop_reason = [], "converged"
        if refining:
            log.info("%s: same volume, no new scribble class: refining the clustering head", volume.source)
            level, train = cache.level, cache.train
            full, full_features = replace(cache.full, n_scribble_classes=n_classes), cache.full_features
        else:
            *train_args, level = self._training_level(volume, scribbles, mask)
            prep = self._prepare(*train_args)
            cfg = self._ensure_network(volume.spatial_dims, volume.n_channels)
            history, stop_reason = self._optimise([prep], cfg, max_iter or cfg.max_iter, progress, self.network)
            whole = prep.roi.numel() <= cfg.max_voxels  # else trained on patches: no head phase, no cache
            if whole:
                self._calibrate_batchnorm(prep.image)
            full = prep if level == 0 else self._prepare(volume, scribbles, mask, targets=False)
            crop_features = self._features(full, cfg, progress)
            full_features = _in_roi(crop_features, full)
            train = None
            if whole:  # the head phase trains on the training level's features
                train_features = crop_features if level == 0 else self._features(prep, cfg)
                train = replace(prep, image=train_features[None], scribbles=None, targets=None)
            del crop_features
            self._cache = None
            if train is not None and (full_features.numel() + train.image.numel()) * 4 <= _CACHE_BYTES:
                self._cache = _RefineCache(key, full.n_scribble_classes, level, train, full, full_features)
        strokes = _strokes(full, full_features, scribbles, volume.spatial_dims)
        if strokes is not None and train is not None and (refining or level > 0):
            # the head learns the strokes at full resolution (coarse training saw them block-pooled)
            head_history, stop_reason = self._optimise([train], cfg, max_iter or cfg.max_iter, progress,
                                                       self.network.head, strokes)
            history += head_history
        channel_labels = self._channels(full, full_features)
        self.channel_to_label = self._assign(channel_labels, full, cfg, keep_labels)
        if level:
            history = [dict(entry, level=level) for entry in history]
        result = self._result(channel_labels, full, len(history), stop_reason, history, start)
        if progress:
            progress({"stage": "done", "iteration": len(history), "n_labels": result.n_labels,
                      "stop_reason": stop_reason})
        return result

    @torch.no_grad()
    def _calibrate_batchnorm(self, image: torch.Tensor) -> None:
        """Set BatchNorm running statistics to those of ``image`` (1, C, *crop), the training crop, so that
        eval-mode prediction normalises as the training steps did (not by a lagging moving average)."""
        norms = [m for m in self.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 1.0
        self.network.train()
        self.network(image.to(self.device))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def fit_reference(self, volumes: Sequence[Volume], masks: Optional[Sequence] = None,
                      max_iter: Optional[int] = None, progress: Optional[ProgressCallback] = None) -> List[dict]:
        """Reference mode: train one network on several images (a step on each in turn).

        Labels are then fixed from the first image; ``predict`` applies them without retraining.
        Returns the training history.
        """
        if not volumes:
            raise InputError("reference mode needs at least one image")
        masks = list(masks) if masks is not None else [None] * len(volumes)
        preps = [self._prepare(v, None, m) for v, m in zip(volumes, masks)]
        dims = {v.spatial_dims for v in volumes}
        channels = {v.n_channels for v in volumes}
        if len(dims) > 1 or len(channels) > 1:
            raise InputError("reference images must share spatial dimensions and channel count")
        cfg = self._ensure_network(volumes[0].spatial_dims, volumes[0].n_channels)
        self._cache = None
        history, _ = self._optimise(preps, cfg, max_iter or cfg.max_iter, progress, self.network)
        channel_labels = self._channels(preps[0], _in_roi(self._features(preps[0], cfg, progress), preps[0]))
        self.channel_to_label = self._assign(channel_labels, preps[0], cfg)
        return history

    def _assign(self, channel_labels: np.ndarray, prep: _Prepared, cfg, keep: bool = False) -> np.ndarray:
        """Channel -> label mapping for a crop's argmax channels (see labels.assign_labels)."""
        previous = self.channel_to_label if keep else None
        return assign_labels(channel_labels, prep.image[0].numpy(), prep.roi[0].numpy(), cfg.n_clusters,
                             prep.n_scribble_classes, cfg.n_labels, previous)

    def _optimise(self, preps: List[_Prepared], cfg: SegmentationConfig, max_iter: int,
                  progress: Optional[ProgressCallback], model: torch.nn.Module, strokes=None):
        """Run SGD steps of ``model`` until a stopping rule holds.

        model: the network, trained with batch statistics; or its head on cached features (preps' images
        are then features), trained in eval mode (BatchNorm running statistics) with the scribble loss on
        ``strokes`` = (features (M, q, 1, 1[, 1]), classes (M, 1, 1[, 1])) of the full-resolution strokes.
        Below the voxel budget every step sees one whole crop (images in turn), otherwise random patches.
        Returns (history, stop_reason).
        """
        batch_statistics = model is self.network
        strokes = None if strokes is None else tuple(t.to(self.device) for t in strokes)
        opt = self.optimizer
        loss_fn = ClusteringLoss(cfg.sim_weight, cfg.con_weight, cfg.scr_weight, preps[0].spacing)
        n_classes = max(p.n_scribble_classes for p in preps)
        min_labels = max(cfg.min_labels, n_classes, cfg.n_labels or 0)
        whole = all(p.roi.numel() <= cfg.max_voxels for p in preps)
        samplers = None if whole else [self._sampler(p, cfg) for p in preps]
        snapshots: dict = {}  # image index -> its labels at the last check, to tell convergence
        history, stop_reason = [], "max_iter"
        model.train(batch_statistics)
        for it in range(1, max_iter + 1):
            index = (it - 1) % len(preps)
            prep = preps[index]
            if whole:
                batch = {"image": prep.image, "roi": prep.roi, "scribbles": prep.scribbles, "targets": prep.targets}
            else:
                batch = samplers[index].sample()
            batch = {k: (None if v is None else v.to(self.device)) for k, v in batch.items()}
            image, roi, scr = batch["image"], batch["roi"], batch.get("scribbles")
            if cfg.lr_half_life:  # decays over the network's training steps, so warm starts continue gently;
                # a head phase decays on from where the network's training stopped, the same for every refinement
                done = self.iterations_done + (0 if batch_statistics else it - 1)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * 0.5 ** (done / cfg.lr_half_life)
            opt.zero_grad(set_to_none=True)
            response = model(image)
            pseudo = response.detach().max(1).indices  # the argmax (first maximum); ~3x faster than argmax(1) on CPU
            initialising = batch.get("targets") is not None and it <= cfg.init_iter
            parts = loss_fn(response, batch["targets"] if initialising else pseudo, roi, scr)
            if strokes is not None:
                parts["scribble"] = scribble_loss(model(strokes[0]), strokes[1])
                parts["loss"] = parts["loss"] + cfg.scr_weight * parts["scribble"]
            parts["loss"].backward()
            opt.step()
            n_now = int(torch.unique(pseudo[roi]).numel())
            record = {"iteration": it, "phase": "network" if batch_statistics else "head", "n_labels": n_now,
                      **{k: float(v.detach()) for k, v in parts.items()}}
            history.append(record)
            self.iterations_done += batch_statistics
            if progress:
                progress({"stage": "fit", "max_iter": max_iter, **record})
            if n_now <= min_labels < history[0]["n_labels"] and not initialising:  # fell to min_labels
                stop_reason = "min_labels"
                break
            if it % cfg.convergence_window == 0 or it == 1:  # it == 1: labels before any step (warm starts)
                current = pseudo[roi].cpu() if whole else self._probe_labels(samplers[index])
                model.train(batch_statistics)
                previous, snapshots[index] = snapshots.get(index), current
                if previous is not None:
                    record["changed"] = float((previous != current).float().mean())
                    if record["changed"] < cfg.convergence_tol:
                        stop_reason = "converged"
                        break
        return history, stop_reason

    def _sampler(self, prep: _Prepared, cfg: SegmentationConfig) -> PatchSampler:
        size = cfg.patch_size or choose_patch_size(cfg, prep.image.shape[1], prep.image.shape[2:], self.device)
        maps = {"image": prep.image, "roi": prep.roi, "scribbles": prep.scribbles, "targets": prep.targets}
        return PatchSampler(maps, size, cfg.patch_batch, seed=cfg.seed + self.iterations_done)

    @torch.no_grad()
    def _probe_labels(self, sampler: PatchSampler) -> torch.Tensor:
        """Eval-mode labels of a fixed set of patches, to tell whether training has converged."""
        self.network.eval()
        return self.network(sampler.probe.to(self.device)).argmax(1).cpu()

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def _features(self, prep: _Prepared, cfg: SegmentationConfig, progress=None) -> torch.Tensor:
        """Eval-mode features (q, *crop) of the crop, on the CPU; sliding window above the voxel budget."""
        self.network.eval()
        if prep.roi.numel() <= cfg.max_voxels:
            return self.network.features(prep.image.to(self.device))[0].cpu()
        size = cfg.patch_size or choose_patch_size(cfg, prep.image.shape[1], prep.image.shape[2:], self.device)
        return sliding_window_response(self.network.features, prep.image, size, cfg, self.device, progress)

    @torch.no_grad()
    def _channels(self, prep: _Prepared, roi_features: torch.Tensor) -> np.ndarray:
        """Argmax channels of the eval-mode head: (q, N) ROI features -> (*crop) int64, 0 outside the ROI."""
        self.network.eval()
        dims = self.network.spatial_dims
        channels = torch.cat([self.network.head(_pointwise(chunk.to(self.device), dims)).flatten(1).argmax(1).cpu()
                              for chunk in roi_features.split(_HEAD_CHUNK, dim=1)])
        crop = torch.zeros(prep.roi.shape[1:], dtype=torch.long)
        crop[prep.roi[0]] = channels
        return crop.numpy()

    def predict(self, volume: Volume, mask=None, progress: Optional[ProgressCallback] = None) -> SegmentationResult:
        """Segment ``volume`` with the trained network, without optimisation (reference mode)."""
        if self.network is None:
            raise InputError("the segmenter has not been fitted: fit it or load a model first")
        start = time.perf_counter()
        prep = self._prepare(volume, None, mask, targets=False)
        cfg = self.config.resolved(volume.spatial_dims)
        channel_labels = self._channels(prep, _in_roi(self._features(prep, cfg, progress), prep))
        self.channel_to_label = self._assign(channel_labels, prep, cfg, keep=True)
        return self._result(channel_labels, prep, 0, "predict", [], start)

    def _result(self, channel_labels: np.ndarray, prep: _Prepared, iterations, stop_reason, history,
                start) -> SegmentationResult:
        labels = np.zeros(prep.full_shape, np.int32)
        labels[prep.crop] = self.channel_to_label[channel_labels]
        labels[~prep.full_roi] = 0
        n_labels = int(np.unique(labels[prep.full_roi]).size)
        return SegmentationResult(labels, n_labels, iterations, stop_reason, history,
                                  time.perf_counter() - start, str(self.device))

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write network weights, optimiser state, label mapping and config to ``path`` (torch file), and the
        features cached for refining the last fitted volume (q floats per ROI voxel: ~240 MB for a 1 mm brain)."""
        if self.network is None:
            raise InputError("nothing to save: the segmenter has not been fitted")
        torch.save({"config": self.config.to_dict(), "network": self.network.hyper_parameters(),
                    "state_dict": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "channel_to_label": self.channel_to_label, "iterations_done": self.iterations_done,
                    "refine_cache": self._cache}, path)

    @classmethod
    def load(cls, path, device: Optional[str] = None) -> "Segmenter":
        """Re-create a Segmenter saved with ``save``; ``device`` overrides the saved device."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            config = SegmentationConfig(**state["config"])
        except Exception as exc:  # corrupt, truncated or foreign file
            raise InputError(f"not a saved UnsupervisedSeg model ({exc.__class__.__name__}: {exc})", path) from exc
        if device is not None:
            config = config.replace(device=device)
        seg = cls(config)
        seg.network = ClusteringNet(**state["network"]).to(seg.device)
        seg.network.load_state_dict(state["state_dict"])
        seg.optimizer = torch.optim.SGD(seg.network.parameters(), lr=config.lr, momentum=config.momentum)
        seg.optimizer.load_state_dict(state["optimizer"])
        seg.channel_to_label = np.asarray(state["channel_to_label"])
        seg.iterations_done = int(state["iterations_done"])
        seg._cache = state.get("refine_cache")
        return seg


def _in_roi(features: torch.Tensor, prep: _Prepared) -> torch.Tensor:
    """(q, *crop) features -> (q, N) of the N ROI voxels; without a mask (ROI = the whole crop) a view."""
    flat, roi = features.reshape(features.shape[0], -1), prep.roi[0].flatten()
    return flat if bool(roi.all()) else flat[:, roi]


def _pointwise(features: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """(q, M) voxel features -> (M, q, 1[, 1], 1): a batch of one-voxel images for the pointwise head."""
    return features.T.reshape(tuple(features.shape[::-1]) + (1,) * spatial_dims)


def _strokes(full: _Prepared, roi_features: torch.Tensor, scribbles, spatial_dims: int):
    """Features and classes of the scribbled ROI voxels at full resolution, as one-voxel images for the
    head: ((M, q, 1, ...), (M, 1, ...)); None without scribbles."""
    if scribbles is None:
        return None
    values = torch.from_numpy(np.asarray(scribbles, np.int64)[full.crop][full.roi[0].numpy()])  # (N,)
    marked = values > 0
    if not marked.any():
        return None
    features = _pointwise(roi_features[:, marked], spatial_dims)
    return features, values[marked].reshape((-1,) + tuple(features.shape[2:]))


def _volume_key(volume: Volume, mask) -> str:
    """Digest of a volume's data, spacing and mask: tells a refit of the same volume."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(volume.data).tobytes())
    digest.update(repr(tuple(volume.spacing)).encode())
    if mask is not None:
        digest.update(np.packbits(np.asarray(mask) > 0).tobytes())
    return digest.hexdigest()


def _bounding_box(mask: np.ndarray, margin: int) -> tuple:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    coords = np.nonzero(mask)
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                 for c, n in zip(coords, mask.shape))


def segment(volume: Volume, scribbles=None, mask=None, config: Optional[SegmentationConfig] = None,
            progress: Optional[ProgressCallback] = None, **overrides) -> SegmentationResult:
    """One-shot segmentation of ``volume`` (see Segmenter.fit)."""
    return Segmenter(config, **overrides).fit(volume, scribbles, mask, progress=progress)


def segment_sequence(frames: Sequence[Volume], config: Optional[SegmentationConfig] = None, masks=None,
                     warm_max_iter: Optional[int] = None, progress: Optional[ProgressCallback] = None,
                     **overrides) -> List[SegmentationResult]:
    """Sequence mode: frames (video, 4D time points) in order, each warm-started from the previous network.

    The channel -> label mapping of the first frame is kept, so a structure keeps its label over time.
    """
    seg = Segmenter(config, **overrides)
    masks = list(masks) if masks is not None else [None] * len(frames)
    results = []
    for index, (frame, mask) in enumerate(zip(frames, masks)):
        max_iter = None if index == 0 else warm_max_iter
        results.append(seg.fit(frame, mask=mask, max_iter=max_iter, progress=progress, keep_labels=index > 0))
    return results
