"""MONAI glue for the bundle in ``monai_bundle/``: datalist, validated dataset, inferer, trainer, writer.

The bundle configs only wire these objects together; the method itself is the engine's
``Segmenter``. Tensors follow MONAI's layout: images (B, C, *spatial) MetaTensors whose affine
(index -> RAS world) comes from the file, label maps (B, 1, *spatial).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import Dataset, MetaTensor, NibabelWriter
from monai.data.utils import affine_to_spacing
from monai.engines.utils import PrepareBatchExtraInput
from monai.inferers import Inferer

from .api import make_segmenter
from .core.errors import InputError
from .core.progress import FitStep, ProgressEvent
from .core.scribbles import validate_scribbles
from .core.volume import Volume, validate_mask, validate_volume
from .engine.config import SegmentationConfig
from .engine.preprocess import normalise_intensity
from .engine.segmenter import Segmenter
from .io.atomic import atomic_output
from .io.paths import NIFTI_EXTENSIONS, find_companion, is_companion, split_name

log = logging.getLogger(__name__)


def nifti_datalist(
    dataset_dir, scribble_suffix: str = "_scribbles", mask_suffix: str = "_mask", output_postfix: str = "seg"
) -> List[Dict[str, str]]:
    """Every NIfTI image in ``dataset_dir``, sorted, as MONAI datalist items.

    Item keys: "image", plus "scribbles" / "mask" (ROI) when ``<stem><scribble_suffix>.*`` /
    ``<stem><mask_suffix>.*`` lies beside it: the command line's companion rule (unsupervised_seg.api). Scribble, mask and earlier output
    files (``<stem>_<output_postfix>``), and the command line's companion files (see io.paths), are not
    images themselves.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise InputError("dataset_dir is not a folder", folder)
    not_images = tuple(s for s in (scribble_suffix, mask_suffix, f"_{output_postfix}" if output_postfix else "") if s)
    items = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and split_name(p)[1] in NIFTI_EXTENSIONS):
        if is_companion(path) or split_name(path)[0].endswith(not_images):
            continue
        item = {"image": str(path)}
        for key, suffix in (("scribbles", scribble_suffix), ("mask", mask_suffix)):
            found = find_companion(path, suffix) if suffix else None
            if found:
                item[key] = str(found)
        items.append(item)
    if not items:
        raise InputError("no NIfTI images (*.nii, *.nii.gz) found", folder)
    return items


def check_item(item: Dict[str, str], config: SegmentationConfig) -> None:
    """Raise InputError (naming the file) if the engine could not segment this datalist item.

    Reads the image, scribbles and mask in full with nibabel, so truncated or corrupt files
    are found here rather than half way through a run, then applies the engine's own checks.
    """
    arrays = {}
    for key, path in item.items():
        try:
            arrays[key] = np.asanyarray(nib.load(path).dataobj)
        except Exception as exc:  # nibabel raises many types for damaged files
            raise InputError(f"cannot read NIfTI ({exc.__class__.__name__}: {exc})", path) from exc
    image = arrays["image"]
    data = image[None] if image.ndim <= 3 else np.moveaxis(image, -1, 0)
    volume = Volume(data, source=item["image"])
    validate_volume(volume)
    mask = None
    if "mask" in arrays:
        try:
            mask = validate_mask(arrays["mask"], volume)
        except InputError as exc:
            raise exc.with_path(item["mask"]) from exc
    resolved = config.resolved(volume.spatial_dims)
    if "scribbles" in arrays:
        validate_scribbles(arrays["scribbles"], volume.spatial_shape, resolved.n_clusters, item["scribbles"])
    normalise_intensity(volume, mask, resolved.lower_percentile, resolved.upper_percentile)


class ValidatedDataset(Dataset):
    """A MONAI Dataset that drops, with an error log line naming the file, items that cannot be segmented.

    Validation happens once, at construction (see ``check_item``), so the list is the same on
    every rank of a distributed run and a damaged file never stops the other volumes.
    ``skipped`` lists (path, message) of the dropped items.
    """

    def __init__(
        self, data: Sequence[dict], transform: Optional[Callable] = None, config: Optional[SegmentationConfig] = None
    ):
        config = config or SegmentationConfig()
        valid, self.skipped = [], []
        for item in data:
            try:
                check_item(item, config)
            except InputError as exc:
                log.error("skipped %s", " ".join(str(exc).split()))  # one line, whatever the reader's message
                self.skipped.append((exc.path or item["image"], exc.problem))
            else:
                valid.append(item)
        if not valid:
            raise InputError(f"none of the {len(data)} images can be segmented (see the errors above)")
        super().__init__(valid, transform)


class PrepareBatchOptionalInput(PrepareBatchExtraInput):
    """PrepareBatchExtraInput for keyword inputs that some images lack (scribbles, masks).

    extra_keys: {inferer keyword: batch key}; a key absent from the batch is not passed.
    """

    def __init__(self, extra_keys: Dict[str, str]):
        super().__init__(dict(extra_keys))

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        present = {k: v for k, v in self.extra_keys.items() if v in batchdata}
        return PrepareBatchExtraInput(present)(batchdata, device, non_blocking, **kwargs)


def to_volume(image: torch.Tensor, affine, source: str) -> Volume:
    """One batch item (C, *spatial) with its affine (or None: 1 mm voxels) -> engine Volume.

    The spacing is taken from the affine, per spatial axis in array order.
    """
    data = image.detach().cpu().numpy()
    if affine is None:
        return Volume(data, source=source)
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    spacing = tuple(float(s) for s in affine_to_spacing(affine, r=data.ndim - 1))
    return Volume(data, spacing, affine, source=source)


def _rank_prefix() -> str:
    """ "[rank r/n] " in a distributed run, else ""."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return f"[rank {dist.get_rank()}/{dist.get_world_size()}] "
    return ""


def progress_logger(source: str, every: int) -> Callable[[ProgressEvent], None]:
    """An engine progress callback that logs every ``every``-th optimisation step."""

    def report(event: ProgressEvent) -> None:
        if isinstance(event, FitStep) and event.iteration % every == 0:
            log.info(
                "%s: %s iteration %d (%.0f %% done), %d labels, loss %.4f",
                source,
                event.phase,
                event.iteration,
                100 * (event.fraction or 0),
                event.n_labels,
                event.loss,
            )

    return report


def _item_array(batch, index: int) -> Optional[np.ndarray]:
    """(*spatial) numpy array of batch item ``index`` of a (B, 1, *spatial) tensor, or None."""
    if batch is None:
        return None
    return batch[index, 0].detach().cpu().numpy()


class TestTimeClusteringInferer(Inferer):
    """Segments each volume of a batch by the engine's test-time optimisation (or a saved model).

    __call__(inputs (B, C, *spatial) MetaTensor, network, scribbles (B, 1, *spatial) or None,
    mask (B, 1, *spatial) or None) -> (B, 1, *spatial) int32 MetaTensor carrying the inputs' metadata
    (affine, file name), so SaveImaged writes each label map on its input's grid.

    ``network`` (the evaluator's) is ignored: the method fits a new network to every volume, so each
    volume gets a fresh ``Segmenter`` seeded with ``config.seed``. Re-using one network object across
    volumes would make a volume's labels depend on the volumes before it (and on the rank that ran it).
    With ``model_path`` (reference mode) a saved Segmenter is applied with ``predict``: no optimisation.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self, config: Optional[SegmentationConfig] = None, model_path: Optional[str] = None, log_every: int = 100
    ):
        super().__init__()
        self.config = config or SegmentationConfig()
        self.model_path = model_path or None
        self.log_every = log_every
        self._reference: Optional[Segmenter] = None
        self._reference_mapping = None

    def _predictor(self) -> Segmenter:
        """The saved model, with its label mapping reset so that results do not depend on volume order."""
        if self._reference is None:
            self._reference = make_segmenter(model=self.model_path, device=self.config.device)
            self._reference_mapping = self._reference.channel_to_label.copy()
            log.info("reference mode: applying %s without optimisation", self.model_path)
        self._reference.channel_to_label = self._reference_mapping.copy()
        return self._reference

    def __call__(self, inputs: torch.Tensor, network=None, scribbles=None, mask=None, *args, **kwargs):
        affines = inputs.affine if isinstance(inputs, MetaTensor) else None
        names = inputs.meta.get("filename_or_obj") if isinstance(inputs, MetaTensor) else None
        outputs = []
        for b in range(inputs.shape[0]):
            affine = None if affines is None else (affines[b] if affines.ndim == 3 else affines)
            source = str(names[b] if isinstance(names, (list, tuple)) else names or f"batch item {b}")
            volume = to_volume(inputs[b], affine, source)
            roi = _item_array(mask, b)
            if self.model_path:
                if scribbles is not None:
                    log.warning("%s: scribbles are ignored in reference mode (model_path is set)", source)
                result = self._predictor().predict(volume, roi)
            else:
                with torch.enable_grad():  # evaluators call inferers under torch.no_grad()
                    result = Segmenter(self.config).fit(
                        volume, _item_array(scribbles, b), roi, progress=progress_logger(source, self.log_every)
                    )
            log.info(
                "%s%s: %d labels, %d iterations (%s), %.1f s on %s",
                _rank_prefix(),
                source,
                result.n_labels,
                result.iterations,
                result.stop_reason,
                result.seconds,
                result.device,
            )
            outputs.append(torch.from_numpy(result.labels)[None])
        labels = MetaTensor(torch.stack(outputs).to(inputs.device))
        if isinstance(inputs, MetaTensor):
            labels.copy_meta_from(inputs, copy_attr=False)
        return labels


class ReferenceTrainer:
    """The paper's reference mode: train one network on every volume of a dataloader, save it.

    run() loads all volumes (they are held in memory together), calls ``Segmenter.fit_reference``
    and writes the model to ``model_path`` atomically. Returns the training history.
    """

    def __init__(
        self,
        dataloader,
        config: Optional[SegmentationConfig] = None,
        model_path: str = "models/model.pt",
        log_every: int = 100,
    ):
        self.dataloader = dataloader
        self.log_every = log_every
        self.config = config or SegmentationConfig()
        self.model_path = Path(model_path)

    def run(self) -> List[dict]:
        volumes, masks = [], []
        for batch in self.dataloader:
            images = batch["image"]
            for b in range(images.shape[0]):
                names = images.meta.get("filename_or_obj")
                volumes.append(to_volume(images[b], images.affine[b], str(names[b])))
                masks.append(_item_array(batch.get("mask"), b))
        log.info("reference mode: training one network on %d volumes", len(volumes))
        segmenter = Segmenter(self.config)
        history = segmenter.fit_reference(volumes, masks, progress=progress_logger("reference set", self.log_every))
        with atomic_output(self.model_path) as tmp:
            segmenter.save(tmp)
        log.info("saved %s after %d iterations", self.model_path, len(history))
        return history


class AtomicNibabelWriter(NibabelWriter):
    """NibabelWriter that writes to a temporary file beside the target and renames it (no partial outputs)."""

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        with atomic_output(filename) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)


# ---------------------------------------------------------------------------------------------- start and end
# The bundle's configs call exit_on_interrupt() first in "initialize" and finish(@dataset) in "finalize".


class Interrupted(SystemExit):
    """Ctrl-C in a bundle run: exit status 130, as the command line; Python exits on it without a traceback."""

    def __init__(self):
        super().__init__(130)


_INTERRUPTED_LINE = "interrupted (Ctrl-C); no partial output file is left"
_previous_sigint: list = []  # the SIGINT handler exit_on_interrupt replaced, restored by finish


def exit_on_interrupt() -> None:
    """Ctrl-C (SIGINT) logs one line and ends the run with exit status 130, without a traceback. An output being
    written is removed (atomic_output), so no temporary or partial file is left. A second Ctrl-C while that
    happens raises KeyboardInterrupt as usual."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.error("%s%s", _rank_prefix(), _INTERRUPTED_LINE)
        raise Interrupted()

    if threading.current_thread() is threading.main_thread():
        _previous_sigint.append(signal.signal(signal.SIGINT, interrupt))


def finish(dataset=None) -> None:
    """End of a run: restore the Ctrl-C handler of exit_on_interrupt (for callers of ``monai.bundle.run`` in
    Python), then exit with status 1, after one log line listing them, if ``dataset`` (a ValidatedDataset)
    skipped any input: a pipeline checking exit codes sees it, as with the command line. The other volumes
    have been segmented and written by then."""
    while _previous_sigint and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _previous_sigint.pop())
    skipped = getattr(dataset, "skipped", [])
    if skipped:
        log.error(
            "%s%d input(s) skipped, exit status 1: %s",
            _rank_prefix(),
            len(skipped),
            ", ".join(str(path) for path, _ in skipped),
        )
        raise SystemExit(1)


def _not_interrupted(record: logging.LogRecord) -> bool:
    """Logging filter: drop the engine's "run is terminating due to exception" line for an interruption (the
    record is logged while the exception is being handled)."""
    return not isinstance(sys.exc_info()[1], (Interrupted, KeyboardInterrupt))


class InterruptHandler:
    """Ignite handler, first in the evaluator's handlers: an interrupted run (Interrupted, or a KeyboardInterrupt
    when exit_on_interrupt was not called) ends with exit status 130 and one log line. Without it the engine logs
    the exception, StatsHandler logs its traceback and Python prints it again. Other exceptions are re-raised
    at once, so they are printed once (by Python), not also by StatsHandler."""

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        engine.logger.addFilter(_not_interrupted)

    @staticmethod
    def exception_raised(engine, exc: BaseException) -> None:
        if isinstance(exc, Interrupted):
            raise exc
        if isinstance(exc, KeyboardInterrupt):
            log.error("%s%s", _rank_prefix(), _INTERRUPTED_LINE)
            raise Interrupted() from None
        raise exc
