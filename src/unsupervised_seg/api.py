"""What ``unsupervised-seg segment`` / ``train`` do, for Python: the command line, the MONAI bundle and the
Slicer module all go through these functions.

Inputs: image files, DICOM series folders, or folders of them. Companion files follow one rule everywhere:
``<stem>_scribbles.<ext>`` and ``<stem>_mask.<ext>`` beside an image (ext: .seg.nrrd, .nii.gz, .nii, .nrrd,
.mha, .png) are used when present; ``scribbles=`` / ``mask=`` name a file (one input) or a folder holding
such files instead. Outputs: one input -> ``output`` is the file (or an existing folder); several ->
``output`` is a folder receiving ``<stem>_labels.<ext>``. Every output is checked (name, format, folder
writable, never an input, existing files kept unless ``overwrite``) before any fitting starts.
A bad input is reported (a ``Failed`` progress event and the outcome's ``error``) and skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from .core.errors import InputError, describe
from .core.progress import Failed, ProgressCallback, ProgressEvent, Written
from .engine.config import SegmentationConfig
from .io import check_output_format, load_frames, load_mask, load_scribbles, load_volume, save_label_series, save_labels
from .io.atomic import atomic_output, ensure_folder
from .io.paths import (
    FORMAT_EXTENSIONS,
    RASTER_EXTENSIONS,
    find_companion,
    format_from_path,
    input_stem,
    list_inputs,
    split_name,
)

log = logging.getLogger(__name__)

# Engine options fixed by a saved model (the network's shape).
FIXED_BY_MODEL = ("n_clusters", "n_conv")


@dataclass
class Job:
    """One image to segment, its companions and where its result goes."""

    image: Path
    output: Path
    format: str
    scribbles: Optional[Path] = None
    mask: Optional[Path] = None
    overlay: Optional[Path] = None  # <output stem>_overlay.png, when asked for


@dataclass
class Outcome:
    """What happened to one input: the written path and summary, or the error."""

    image: Optional[Path]
    output: Optional[Path] = None
    summary: Dict[str, object] = field(default_factory=dict)
    labels: Optional[np.ndarray] = None
    error: Optional[BaseException] = None


@dataclass
class Batch:
    """Outcomes of every input, in order; ``failed``: how many failed."""

    outcomes: List[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(o.error is not None for o in self.outcomes)


class _Events:
    """Sends progress events with the current item's context (input, scribbles, mask) added."""

    def __init__(self, progress: Optional[ProgressCallback]):
        self.progress, self.context = progress, {}

    def __call__(self, event: ProgressEvent) -> None:
        if self.progress:
            event.extra = {**self.context, **event.extra}
            self.progress(event)

    def fail(self, batch: Batch, exc: BaseException, path=None) -> None:
        where, problem = describe(exc, path)
        log.debug("failure on %s", where, exc_info=exc)
        batch.outcomes.append(Outcome(None if path is None else Path(path), error=exc))
        self(Failed(where, problem))


def summary(result) -> dict:
    """The numbers a face reports about a SegmentationResult."""
    return {
        "n_labels": result.n_labels,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "seconds": round(result.seconds, 3),
        "device": result.device,
    }


def check_output(path: Path, protected: Set[Path], overwrite: bool) -> None:
    """Refuse to write over an input, over an existing file without ``overwrite``, or onto a folder; make sure
    the folder exists and takes new files."""
    if path.resolve() in protected:
        raise InputError("output would replace an input file; choose another output name", path)
    if path.is_dir():
        raise InputError("output is a folder, expected a file name", path)
    if path.exists() and not overwrite:
        raise InputError("output exists (use --overwrite to replace it)", path)
    ensure_parent(path)


def ensure_parent(path: Path) -> None:
    """Make sure the folder of output file ``path`` exists and takes new files; the error names ``path``
    (the output the user gave), and the folder."""
    folder = path.resolve().parent
    try:
        ensure_folder(folder)
    except InputError as exc:
        raise InputError(f"cannot write into {exc.path or folder}: {exc.problem}", path) from None


def expand_inputs(inputs: Sequence, events: _Events, batch: Batch):
    """(image files and DICOM series, whether this is a batch); missing paths and empty folders fail."""
    items, is_batch = [], len(inputs) > 1
    for text in inputs:
        path = Path(text)
        if not path.exists():
            events.fail(batch, InputError("no such file or folder", path), path)
        elif path.is_dir():
            found = list_inputs(path)
            if not found:
                events.fail(batch, InputError("folder holds no images or DICOM series", path), path)
            is_batch = is_batch or found != [path]
            items.extend(found)
        else:
            items.append(path)
    return items, is_batch


def companion(image: Path, option, suffix: str, is_batch: bool) -> Optional[Path]:
    """The scribble / mask file of ``image``: ``option``'s file, else ``<stem><suffix>.*`` in ``option``'s folder,
    else beside the image (None if there is none)."""
    if option is None:
        return find_companion(image, suffix)
    path = Path(option)
    if path.is_dir():
        return find_companion(image, suffix, path)
    if is_batch:
        raise InputError(f"must be a folder of <stem>{suffix} files when several images are given", path)
    return path


def output_format(image: Path, output_file: Optional[Path], format: Optional[str]) -> str:
    """The output format: ``format``, else the output name's extension, else png for raster images, nifti."""
    if output_file is not None:
        named = format_from_path(output_file)
        if format and named not in (None, format):
            raise InputError(
                f"output name does not end in {FORMAT_EXTENSIONS[format]}, the extension of --format {format}",
                output_file,
            )
        if format or named:
            return format or named
        raise InputError(
            f"cannot tell the output format from the name (use one of "
            f"{', '.join(FORMAT_EXTENSIONS.values())} or --format)",
            output_file,
        )
    if format:
        return format
    return "png" if Path(image).suffix.lower() in RASTER_EXTENSIONS else "nifti"


def plan(items: List[Path], output, is_batch: bool, format: Optional[str]) -> List[Job]:
    """Jobs for the inputs: one output file, or ``<stem>_labels.<ext>`` in the output folder."""
    out = Path(output)
    into_folder = is_batch or out.is_dir() or str(output).endswith(("/", os.sep))
    if into_folder:
        ensure_folder(out)
    else:
        ensure_parent(out)
    jobs = []
    for image in items:
        fmt = output_format(image, None if into_folder else out, format)
        target = out / f"{input_stem(image)}_labels{FORMAT_EXTENSIONS[fmt]}" if into_folder else out
        jobs.append(Job(image, target, fmt))
    return jobs


def make_segmenter(model=None, init_model=None, **engine_options):
    """A fresh Segmenter, or one loaded from ``model`` / ``init_model`` with the options applied."""
    from .engine.segmenter import Segmenter

    source = model or init_model
    if source is None:
        return Segmenter(SegmentationConfig(**engine_options))
    fixed = [f for f in FIXED_BY_MODEL if f in engine_options]
    if fixed:
        raise InputError(f"{', '.join(fixed)} is fixed by the saved model", source)
    segmenter = Segmenter.load(source, device=engine_options.get("device"))
    changes = {k: v for k, v in engine_options.items() if k != "device"}
    if changes:
        segmenter.config = segmenter.config.replace(**changes)
    return segmenter


def segment_files(
    inputs,
    output,
    scribbles=None,
    mask=None,
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    model=None,
    init_model=None,
    save_model=None,
    class_names: Optional[Dict[int, str]] = None,
    reference_scribbles: bool = False,
    series_uid: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    keep_labels: bool = False,
    overlay: bool = False,
    **engine_options,
) -> Batch:
    """Segment image files / DICOM folders into label files (what ``unsupervised-seg segment`` does).

    inputs: a path or a list of them; output: a file (one input) or a folder. model: predict with a trained
    model (reference mode), init_model: warm-start from one, save_model: save the fitted model (one input).
    engine_options: SegmentationConfig fields (min_labels, n_labels, max_iter, n_clusters, seed, device, ...).
    keep_labels: keep each outcome's label array (for callers in Python). overlay: also write
    ``<output stem>_overlay.png`` beside each label file (the labels tinted on the image; three planes in 3D).
    Returns a Batch; inputs that failed carry their error and were reported as ``Failed`` events.
    """
    SegmentationConfig(**engine_options)  # bad values fail here, before any work
    if model and (init_model or save_model or scribbles):
        raise InputError("a model for prediction takes no scribbles, initial model or saved model", model)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    events, batch = _Events(progress), Batch()
    items, is_batch = expand_inputs(inputs, events, batch)
    if save_model and is_batch:
        raise InputError("saving the model needs a single input image", save_model)
    for name, value in (("scribbles", scribbles), ("mask", mask)):
        if is_batch and value and not Path(value).is_dir():
            raise InputError(f"--{name} must be a folder of <stem>_{name} files when several images are given", value)
    jobs = plan(items, output, is_batch, format) if items else []
    protected = {p.resolve() for p in items} | {Path(p).resolve() for p in (model, init_model) if p}
    if save_model:
        check_output(Path(save_model), protected, overwrite)
    for job in jobs:
        events.context = {"input": str(job.image)}
        try:
            job.scribbles = companion(job.image, scribbles, "_scribbles", is_batch)
            job.mask = companion(job.image, mask, "_mask", is_batch)
            events.context.update({k: str(v) for k, v in (("scribbles", job.scribbles), ("mask", job.mask)) if v})
            companions = protected | {p.resolve() for p in (job.scribbles, job.mask) if p}
            check_output(job.output, companions, overwrite)
            if overlay:
                job.overlay = job.output.parent / f"{split_name(job.output)[0]}_overlay.png"
                check_output(job.overlay, companions | {job.output.resolve()}, overwrite)
            batch.outcomes.append(
                _run(
                    job,
                    events,
                    overwrite,
                    model,
                    init_model,
                    save_model,
                    class_names or {},
                    reference_scribbles,
                    series_uid,
                    keep_labels,
                    engine_options,
                )
            )
        except Exception as exc:  # one failed image must not stop the batch
            events.fail(batch, exc, job.image)
    return batch


def _run(
    job: Job,
    events: _Events,
    overwrite,
    model,
    init_model,
    save_model,
    class_names,
    reference_scribbles,
    series_uid,
    keep_labels,
    engine_options,
) -> Outcome:
    volume = load_volume(job.image, series_uid=series_uid)
    if job.output.resolve() in {Path(p).resolve() for p in volume.meta.get("dicom_files", [])}:
        raise InputError("output would replace a file of the input DICOM series", job.output)
    check_output_format(job.format, volume, job.output)
    strokes, names = (None, {}) if job.scribbles is None else load_scribbles(job.scribbles, volume, reference_scribbles)
    roi = None if job.mask is None else load_mask(job.mask, volume)
    segmenter = make_segmenter(model, init_model, **engine_options)
    if model:
        result = segmenter.predict(volume, roi, progress=events)
    else:
        result = segmenter.fit(volume, strokes, roi, progress=events)
    scribbled = strokes is not None and bool(np.any(strokes))
    path = save_labels(
        result.labels, volume, job.output, job.format, class_names={**names, **class_names} or None, scribbled=scribbled
    )
    info = summary(result)
    if job.overlay:
        from .demo.overlay import save_overlay

        info["overlay"] = str(save_overlay(volume, result.labels, job.overlay))
    if save_model:
        with atomic_output(save_model) as tmp:
            segmenter.save(tmp)
        info["model"] = str(save_model)
    events(Written(str(path), extra=info))
    return Outcome(job.image, path, info, result.labels if keep_labels else None)


def train_files(
    images, output, mask=None, *, overwrite: bool = False, progress: Optional[ProgressCallback] = None, **engine_options
) -> Batch:
    """Reference mode (``unsupervised-seg train``): one network for a set of images, saved to ``output``.

    mask: one mask file for every image (same grid), or a folder of ``<stem>_mask`` files; without it each
    image's ``<stem>_mask`` file beside it is used when present.
    """
    from .engine.segmenter import Segmenter

    config = SegmentationConfig(**engine_options)
    events, batch = _Events(progress), Batch()
    images = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    items, _ = expand_inputs(images, events, batch)
    if batch.failed or not items:
        return batch
    out = Path(output)
    check_output(out, {p.resolve() for p in items}, overwrite)
    volumes = [load_volume(p) for p in items]
    shared = mask is not None and not Path(mask).is_dir()
    paths = [Path(mask) if shared else companion(p, mask, "_mask", False) for p in items]
    masks = [None if p is None else load_mask(p, v) for p, v in zip(paths, volumes)]
    events.context = {"input": str(items[0])} if len(items) == 1 else {}
    segmenter = Segmenter(config)
    history = segmenter.fit_reference(volumes, masks, progress=events)
    with atomic_output(out) as tmp:
        segmenter.save(tmp)
    info = {"images": len(volumes), "iterations": len(history)}
    events(Written(str(out), extra=info))
    batch.outcomes.append(Outcome(None, out, info))
    return batch


def segment_sequence_files(
    source,
    output,
    mask=None,
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    warm_max_iter: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    **engine_options,
) -> Batch:
    """Sequence mode: a 4D NIfTI (time last) -> one 4D label file; a folder of frames -> one label file each.
    Each frame warm-starts from the previous one and keeps its label mapping."""
    from .engine.sequence import segment_sequence

    config = SegmentationConfig(**engine_options)
    source, out = Path(source), Path(output)
    frames = load_frames(source)
    protected = {source.resolve()} | {Path(f.source).resolve() for f in frames}
    four_d = source.is_file()
    if four_d:
        if format not in (None, "nifti"):
            raise InputError("a 4D input gives a 4D NIfTI label file; --format must be nifti", source)
        into_folder = out.is_dir() or str(output).endswith(("/", os.sep))
        outputs = [out / f"{input_stem(source)}_labels.nii.gz" if into_folder else out]
        if format_from_path(outputs[0]) != "nifti":
            raise InputError("a 4D input gives a 4D NIfTI label file: name it .nii.gz", outputs[0])
    else:
        ensure_folder(out)
        fmt = format or ("png" if frames[0].spatial_dims == 2 and frames[0].affine is None else "nifti")
        outputs = [out / f"{input_stem(Path(f.source))}_labels{FORMAT_EXTENSIONS[fmt]}" for f in frames]
        for frame, path in zip(frames, outputs):
            check_output_format(fmt, frame, path)
    for path in outputs:
        check_output(path, protected, overwrite)
    masks = None if mask is None else [load_mask(mask, frame) for frame in frames]
    events, batch = _Events(progress), Batch()
    frame_index = [0]

    def per_frame(event: ProgressEvent) -> None:
        events.context = {"input": str(source), "frame": frame_index[0]}
        events(event)
        frame_index[0] += event.stage == "done"

    results = segment_sequence(frames, config, masks=masks, warm_max_iter=warm_max_iter, progress=per_frame)
    events.context = {"input": str(source)}
    if four_d:
        path = save_label_series(np.stack([r.labels for r in results], axis=-1), frames[0], outputs[0])
        info = {
            "frames": len(results),
            "iterations": sum(r.iterations for r in results),
            "seconds": round(sum(r.seconds for r in results), 3),
        }
        events(Written(str(path), extra=info))
        batch.outcomes.append(Outcome(source, path, info))
    else:
        for frame, result, path in zip(frames, results, outputs):
            written = save_labels(result.labels, frame, path)
            events(Written(str(written), extra=summary(result)))
            batch.outcomes.append(Outcome(Path(frame.source), written, summary(result)))
    return batch
