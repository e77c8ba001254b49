"""Segmenter: test-time optimisation of a ClusteringNet on one volume (or a set), and prediction.

The work is done by the modules beside this one (preprocess, training, refine, labels, persistence);
the Segmenter holds the state between calls (network, optimiser, label mapping, refinement cache) and
decides which phases run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.progress import Done, ProgressCallback
from ..core.scribbles import scribble_classes, validate_scribbles
from ..core.volume import Volume, validate_mask, validate_volume
from . import persistence, predict
from .config import SegmentationConfig
from .device import import_dynamo_quietly, is_available, resolve_device, reuse_freed_host_memory
from .foreground import roi_or_foreground
from .labels import assign_labels
from .network import ClusteringNet, kernel_size
from .preprocess import Prepared, in_roi, prepare, training_preps
from .refine import RefineCache, name_channels, strokes, volume_key
from .result import SegmentationResult
from .training import HEAD, NETWORK, calibrate_batchnorm, train

log = logging.getLogger(__name__)


class Segmenter:
    """Stateful test-time clustering: the network and optimiser persist between calls.

    fit(volume, scribbles, mask)  -> SegmentationResult; a second fit warm-starts from the first
                                     (on the same volume with strokes only the clustering head is
                                     retrained, on cached features: a refinement; see ``fit``).
    fit_reference([volumes])      -> trains one network on several images (reference mode).
    predict(volume, mask)         -> labels without optimisation, consistent with the fit.
    save(path) / Segmenter.load(path).
    """

    def __init__(self, config: Optional[SegmentationConfig] = None, **overrides):
        config = config or SegmentationConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.device = resolve_device(self.config.device)
        if self.device.type == "cpu":
            reuse_freed_host_memory()
        import_dynamo_quietly()  # before the first optimiser (see device.py): no torch cache folder left behind
        self.network: Optional[ClusteringNet] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.channel_to_label: Optional[np.ndarray] = None  # (q,) int: output label of each response channel
        self.iterations_done = 0  # the network's training steps so far (the learning rate decays over them)
        self._cache: Optional[RefineCache] = None

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        volume: Volume,
        scribbles=None,
        mask=None,
        max_iter: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        keep_labels: bool = False,
    ) -> SegmentationResult:
        """Optimise the network on ``volume`` (warm-starting from any previous fit) and segment it.

        volume: Volume (C, *spatial); scribbles: (*spatial) int, 0 = unlabelled; mask: (*spatial) ROI.
        keep_labels: keep the channel -> label mapping of the previous fit (sequence mode).
        Strokes train the network only where it trains on patches (crops above ``max_voxels``). Otherwise it
        trains as without them and the clustering head then learns them on the full-resolution features, so a
        fit with strokes is the unsupervised fit (with its stroke-free head phase) plus a head refinement.
        Refitting the volume of the previous fit with strokes (added, erased, of a new class, or drawn after an
        unsupervised fit) retrains only the clustering head on the cached features of that fit, from the head
        that gave the labels the user saw: a refinement in a fraction of the first fit's time. The cache travels
        with ``save`` / ``load``.
        """
        start = time.perf_counter()
        cfg = self._check(volume, scribbles, mask)
        max_iter = max_iter or cfg.max_iter
        n_classes = scribble_classes(validate_scribbles(scribbles, volume.spatial_shape, cfg.n_clusters, volume.source))
        key, cache = volume_key(volume, mask), self._cache
        refining = cache is not None and cache.key == key and n_classes > 0 and not keep_labels
        if refining and mask is None:  # a refinement keeps the last fit's ROI; a new fit adds the strokes to it
            stroked = np.asarray(scribbles).reshape(cache.full.full_shape) > 0
            if np.any(stroked & ~cache.full.full_roi):
                log.info("%s: strokes outside the region the last fit clustered: fitting anew", volume.source)
                refining = False
        history, stop_reason = [], "converged"
        if refining:
            log.info("%s: same volume: refining the clustering head on the strokes", volume.source)
            cache = replace(cache, full=replace(cache.full, n_scribble_classes=n_classes))
        else:  # a refinement reuses the first fit's ROI; only a new fit looks for the foreground
            roi = roi_or_foreground(volume, scribbles, mask, cfg.foreground)
            cache, history, stop_reason = self._fit_network(volume, scribbles, roi, cfg, max_iter, key, progress)
        marked = strokes(cache.full, cache.full_features, scribbles, volume.spatial_dims)
        # a new fit's stroke-free head phase takes the steps the network left (a sequence frame keeps its labels)
        free_steps = max_iter - len(history) if cfg.head_shrink and not (refining or keep_labels) else 0
        for phase_strokes, steps in ((None, free_steps), (marked, max_iter if marked is not None else 0)):
            if cache.train is not None and steps > 0:
                head_history, stop_reason = self._head_phase(cache, cfg, phase_strokes, steps, progress)
                history += head_history
        channels = self._channels(cache.full, cache.full_features)
        self.channel_to_label = self._assign(channels, cache.full, cfg, keep_labels)
        if cache.level:
            history = [dict(entry, level=cache.level) for entry in history]
        result = self._result(channels, cache.full, len(history), stop_reason, history, start, scribbles)
        if progress:
            progress(Done(len(history), result.n_labels, stop_reason))
        return result

    def _head_phase(self, cache: RefineCache, cfg: SegmentationConfig, marked, max_iter: int, progress):
        """Train the clustering head on the cached training-level features; returns (history, stop_reason).

        Without strokes (``head_shrink``, after the network) the head self-trains until it converges or a label
        shrank. With strokes (``marked``; the network trained as without them, its crop seen whole) the head
        learns them at full resolution until it converges, going on from the head as it is: the one that gave
        the unsupervised labels, or the previous refinement's. So strokes refine the result they were drawn on,
        and strokes drawn after an unsupervised fit give the labels of a fresh fit with them (on a chest CT,
        restarting from the network's head left every stroke style below the unsupervised result;
        benchmarks/RESULTS.md).
        """
        if marked is None:  # the output labels at the start, for the "shrank" rule (no stroke class named yet)
            unnamed = replace(cache.full, n_scribble_classes=0)
            start_labels = self._assign(self._channels(unnamed, cache.full_features), unnamed, cfg)
            return self._train(self.network.head, [cache.train], cfg, HEAD, max_iter, progress, None, start_labels)
        name_channels(self.network.head, self.optimizer, marked, cache.train)
        return self._train(self.network.head, [cache.train], cfg, HEAD, max_iter, progress, marked)

    def _fit_network(self, volume: Volume, scribbles, mask, cfg: SegmentationConfig, max_iter: int, key: str, progress):
        """Train the whole network (coarse to fine) and compute its features at full resolution.

        Returns (RefineCache of this fit, history, stop_reason); the cache is kept for refinements when the
        training crop was seen whole (no patches) and it fits CACHE_BYTES (its ``train`` is None otherwise).
        """
        prep, full, level = training_preps(volume, scribbles, mask, cfg)
        self._ensure_network(volume, cfg)
        history, stop_reason = self._train(self.network, [prep], cfg, NETWORK, max_iter, progress)
        whole = prep.roi.numel() <= cfg.max_voxels  # else trained on patches: no head phase, no cache
        if whole:
            calibrate_batchnorm(self.network, [prep.image.to(self.device)])
        crop_features = self._features(full, cfg, progress)
        full_features = in_roi(crop_features, full)
        train_prep = None
        if whole:  # the head phase trains on the training level's features
            train_features = crop_features if level == 0 else self._features(prep, cfg)
            train_prep = replace(prep, image=train_features[None], scribbles=None, targets=None)
        fitted = RefineCache(key, level, train_prep, full, full_features)
        keep = train_prep is not None and RefineCache.fits(full_features, train_prep.image)
        self._cache = fitted if keep else None
        return fitted, history, stop_reason

    def fit_reference(
        self,
        volumes: Sequence[Volume],
        masks: Optional[Sequence] = None,
        max_iter: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> List[dict]:
        """Reference mode: train one network on several images (a step on each in turn), coarse to fine
        and with BatchNorm calibrated on all of them, as ``fit`` does for one.

        Labels are then fixed from the first image at full resolution; ``predict`` applies them without
        retraining. Returns the training history.
        """
        if not volumes:
            raise InputError("reference mode needs at least one image")
        if len({v.spatial_dims for v in volumes}) > 1 or len({v.n_channels for v in volumes}) > 1:
            raise InputError("reference images must share spatial dimensions and channel count")
        masks = list(masks) if masks is not None else [None] * len(volumes)
        cfg = [self._check(v, None, m) for v, m in zip(volumes, masks)][0]
        masks = [roi_or_foreground(v, None, m, cfg.foreground) for v, m in zip(volumes, masks)]
        levels = [training_preps(v, None, m, cfg) for v, m in zip(volumes, masks)]
        preps = [prep for prep, _, _ in levels]
        self._ensure_network(volumes[0], cfg)
        self._cache = None
        history, _ = self._train(self.network, preps, cfg, NETWORK, max_iter or cfg.max_iter, progress)
        if all(p.roi.numel() <= cfg.max_voxels for p in preps):
            calibrate_batchnorm(self.network, [p.image.to(self.device) for p in preps])
        first = levels[0][1]  # the first image at full resolution (labels are fixed from it)
        channels = self._channels(first, in_roi(self._features(first, cfg, progress), first))
        self.channel_to_label = self._assign(channels, first, cfg)
        if progress:
            progress(
                Done(
                    len(history), int(np.unique(self.channel_to_label[channels][first.roi[0].numpy()]).size), "trained"
                )
            )
        return history

    def _train(self, model, preps, cfg: SegmentationConfig, phase, max_iter: int, progress, marked=None, labels=None):
        """``training.train`` with this segmenter's optimiser, device and steps so far; the network's steps count.
        labels: (q,) the output label of each channel at the start (the head phase's "shrank" rule)."""
        label_of_channel = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
        history, stop_reason = train(
            model,
            self.optimizer,
            preps,
            cfg,
            phase,
            max_iter,
            self.device,
            self.iterations_done,
            progress,
            marked,
            label_of_channel,
        )
        self.iterations_done += len(history) if phase is NETWORK else 0
        return history, stop_reason

    def _check(self, volume: Volume, scribbles, mask) -> SegmentationConfig:
        """Validate the input (and that it suits a trained network); the config resolved for its dims."""
        validate_volume(volume)
        validate_mask(mask, volume)
        net = self.network
        if net is not None and (volume.spatial_dims, volume.n_channels) != (net.spatial_dims, net.in_channels):
            raise InputError(
                f"image has {volume.spatial_dims} spatial dims and {volume.n_channels} channels; the "
                f"network was made for {net.spatial_dims} and {net.in_channels}",
                volume.source,
            )
        return self.config.resolved(volume.spatial_dims)

    def _ensure_network(self, volume: Volume, cfg: SegmentationConfig) -> None:
        if self.network is None:
            torch.manual_seed(cfg.seed)
            kernel = kernel_size(volume.spacing)
            self.network = ClusteringNet(volume.spatial_dims, volume.n_channels, cfg.n_clusters, cfg.n_conv, kernel)
            self.network.to(self.device)
            self.optimizer = torch.optim.SGD(self.network.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def _assign(self, channel_labels: np.ndarray, prep: Prepared, cfg, keep: bool = False) -> np.ndarray:
        """Channel -> label mapping for a crop's argmax channels (see labels.assign_labels)."""
        previous = self.channel_to_label if keep else None
        return assign_labels(
            channel_labels,
            prep.image[0].numpy(),
            prep.roi[0].numpy(),
            cfg.n_clusters,
            prep.n_scribble_classes,
            cfg.n_labels,
            previous,
            cfg.min_cluster_fraction,
        )

    # ------------------------------------------------------------------ prediction
    def _features(self, prep: Prepared, cfg: SegmentationConfig, progress=None) -> torch.Tensor:
        return predict.features(self.network, prep, cfg, self.device, progress)

    def _channels(self, prep: Prepared, roi_features: torch.Tensor) -> np.ndarray:
        return predict.head_channels(self.network, prep, roi_features, self.device)

    def predict(self, volume: Volume, mask=None, progress: Optional[ProgressCallback] = None) -> SegmentationResult:
        """Segment ``volume`` with the trained network, without optimisation (reference mode)."""
        if self.network is None:
            raise InputError("the segmenter has not been fitted: fit it or load a model first")
        start = time.perf_counter()
        cfg = self._check(volume, None, mask)
        prep = prepare(volume, None, roi_or_foreground(volume, None, mask, cfg.foreground), cfg, targets=False)
        channels = self._channels(prep, in_roi(self._features(prep, cfg, progress), prep))
        self.channel_to_label = self._assign(channels, prep, cfg, keep=True)
        return self._result(channels, prep, 0, "predict", [], start)

    def _result(
        self, channel_labels: np.ndarray, prep: Prepared, iterations, stop_reason, history, start, scribbles=None
    ) -> SegmentationResult:
        """Labels on the full grid; stroked ROI voxels keep the class the user gave them."""
        labels = np.zeros(prep.full_shape, np.int32)
        labels[prep.crop] = self.channel_to_label[channel_labels]
        if scribbles is not None:
            strokes = np.asarray(scribbles).reshape(prep.full_shape)
            labels = np.where(strokes > 0, strokes, labels).astype(np.int32)
        labels[~prep.full_roi] = 0
        n_labels = int(np.unique(labels[prep.full_roi]).size)
        return SegmentationResult(
            labels, n_labels, iterations, stop_reason, history, time.perf_counter() - start, str(self.device)
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write network weights, optimiser state, label mapping and config to ``path`` (a versioned state of
        tensors and plain values), and the features cached for refining the last fitted volume (q floats per
        ROI voxel: ~240 MB for a 1 mm brain)."""
        if self.network is None:
            raise InputError("nothing to save: the segmenter has not been fitted")
        persistence.write_state(persistence.segmenter_state(self), path)

    @classmethod
    def load(cls, path, device: Optional[str] = None) -> Segmenter:
        """Re-create a Segmenter saved with ``save`` (no code in the file is ever run); ``device`` overrides
        the saved device. A model saved on a device this machine lacks (trained on a GPU, used on a laptop)
        runs on the best device here."""
        state = persistence.read_state(path)
        try:
            config = SegmentationConfig(**state["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"damaged UnsupervisedSeg model ({exc.__class__.__name__}: {exc})", path) from None
        if device is None and not is_available(config.device):
            log.info("%s: saved for device %r, which this machine lacks: using 'auto'", path, config.device)
            device = "auto"
        seg = cls(config if device is None else config.replace(device=device))  # an unavailable override: says so
        try:
            persistence.restore(seg, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"damaged UnsupervisedSeg model ({exc.__class__.__name__}: {exc})", path) from None
        return seg


def segment(
    volume: Volume,
    scribbles=None,
    mask=None,
    config: Optional[SegmentationConfig] = None,
    progress: Optional[ProgressCallback] = None,
    **overrides,
) -> SegmentationResult:
    """One-shot segmentation of ``volume`` (see Segmenter.fit)."""
    return Segmenter(config, **overrides).fit(volume, scribbles, mask, progress=progress)
