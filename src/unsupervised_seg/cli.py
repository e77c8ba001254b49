"""Command line: ``unsupervised-seg segment | train | demo`` (also ``python -m unsupervised_seg``).

segment IN... -o OUT
    One input file: OUT is the output file (or an existing folder to write ``<stem>_labels.<ext>`` into).
    Several inputs, or a folder of images: a batch; OUT is a folder receiving ``<stem>_labels.<ext>``.
    A folder holding DICOM files (and no other images) is one DICOM series.
    Scribbles: ``--scribbles FILE`` for one input; otherwise (or with ``--scribbles FOLDER``) each image's
    ``<stem>_scribbles.<ext>`` beside it (or in FOLDER) is used when present, ext one of .seg.nrrd,
    .nii.gz, .nii, .nrrd, .mha, .png. Masks: ``--mask FILE`` for one input, ``--mask FOLDER`` with
    ``<stem>_mask.<ext>`` files for a batch.
    A bad input is reported as one line on stderr and skipped; the exit code is 1 if any input failed.
    Existing outputs are kept unless --overwrite; an input is never written over.
train IMAGES... -o model.pt     reference mode: one network for a set of images (then ``segment --model``).
demo [-o DIR]                   segments the bundled MNI152 sample, writes labels and a PNG overlay.

Progress: a tqdm bar on a terminal (not in CI), or ``--progress json``: one JSON object per line on
stdout (the engine's progress dicts plus {"stage": "written", "path"} and {"stage": "error", "path",
"message"}), or ``--progress none``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np

from . import __version__
from .config import SegmentationConfig
from .errors import InputError
from .io import FORMATS, load_frames, load_mask, load_scribbles, load_volume, save_label_series, save_labels
from .io.atomic import atomic_output, ensure_folder
from .io.paths import (FORMAT_EXTENSIONS, RASTER_EXTENSIONS, find_companion, format_from_path, input_stem,
                       list_inputs, split_name)

PROG = "unsupervised-seg"
# command-line option -> SegmentationConfig field; unset options (None) leave the config's default.
ENGINE_OPTIONS = {"min_labels": "min_labels", "n_labels": "n_labels", "max_iter": "max_iter",
                  "clusters": "n_clusters", "seed": "seed", "device": "device"}
FIXED_BY_MODEL = ("n_clusters", "n_conv")


# ---------------------------------------------------------------------------------------------- output
def _jsonable(value):
    """JSON fallback for numpy values in progress events."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class Reporter:
    """Where progress, results and errors go.

    mode "bar": a tqdm bar on stderr when it is a terminal and not in CI, result lines on stdout;
    "json": one JSON object per line on stdout; "none": result lines only. Errors: one line on stderr
    each (plus a JSON event in json mode). Called with an engine progress dict, it reports progress.
    """

    def __init__(self, mode: str = "bar"):
        self.mode = mode
        self.use_bar = mode == "bar" and sys.stderr.isatty() and not _in_ci()
        self.bar = None
        self.context: Dict[str, object] = {}
        self.frame: Optional[int] = None  # sequence mode: index of the frame being fitted
        self.failures = 0

    def begin(self, **context) -> None:
        """Start reporting on a new item; ``context`` (e.g. input=path) is added to its JSON events."""
        self.close()
        self.context = {k: str(v) for k, v in context.items() if v is not None}

    def emit(self, event: dict) -> None:
        print(json.dumps(event, default=_jsonable), flush=True)

    def __call__(self, event: dict) -> None:
        if self.mode == "json":
            extra = {} if self.frame is None else {"frame": self.frame}
            self.emit({**event, **self.context, **extra})
        elif self.use_bar and event.get("stage") == "fit":
            self._update_bar(event)
        if event.get("stage") == "done" and self.frame is not None:
            self.frame += 1

    def _update_bar(self, event: dict) -> None:
        phase = event.get("phase", "network")
        if self.bar is not None and self.bar.desc.split()[-1] != phase:  # the head phase gets its own bar
            self.close()
        if self.bar is None:
            from tqdm import tqdm

            name = Path(self.context.get("input", "")).name
            self.bar = tqdm(total=event.get("max_iter"), desc=f"{name} {phase}".strip(), file=sys.stderr,
                            unit="it", leave=False)
        self.bar.n = event["iteration"]
        self.bar.set_postfix(labels=event.get("n_labels"), loss=f"{event.get('loss', float('nan')):.3f}",
                             refresh=False)
        self.bar.refresh()

    def written(self, path, summary: str = "", **info) -> None:
        """Report a finished output file."""
        self.close()
        if self.mode == "json":
            self.emit({"stage": "written", "path": str(path), **self.context, **info})
        else:
            print(f"wrote {path}" + (f" ({summary})" if summary else ""), flush=True)

    def result(self, text: str, **info) -> None:
        """Report a result that is not a file (e.g. the demo's Dice)."""
        if self.mode == "json":
            self.emit({"stage": "result", **info})
        else:
            print(text, flush=True)

    def error(self, exc: BaseException, path=None) -> None:
        """One line on stderr naming the file and the problem (and a JSON error event)."""
        self.close()
        self.failures += 1
        if isinstance(exc, InputError):
            path = exc.path or path
            problem = exc.problem
        else:
            problem = f"{exc.__class__.__name__}: {exc}"
        problem = " ".join(str(problem).split())
        where = f"{path}: " if path else ""
        print(f"{PROG}: error: {where}{problem}", file=sys.stderr, flush=True)
        if self.mode == "json":
            self.emit({"stage": "error", "path": None if path is None else str(path), "message": problem,
                       **{k: v for k, v in self.context.items() if k != "path"}})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _summary(result) -> dict:
    return {"n_labels": result.n_labels, "iterations": result.iterations, "stop_reason": result.stop_reason,
            "seconds": round(result.seconds, 3), "device": result.device}


def _summary_text(info: dict) -> str:
    return (f"{info['n_labels']} labels, {info['iterations']} iterations, stopped: {info['stop_reason']}, "
            f"{info['seconds']:.1f} s on {info['device']}")


# ---------------------------------------------------------------------------------------------- options
def config_overrides(args) -> dict:
    """SegmentationConfig fields the user set on the command line (defaults stay in config.py)."""
    return {field: getattr(args, option) for option, field in ENGINE_OPTIONS.items()
            if getattr(args, option, None) is not None}


def parse_class_names(text: Optional[str]) -> Dict[int, str]:
    """{class id: name} from a JSON object ('{"1": "liver"}') or a path to a JSON file holding one."""
    if not text:
        return {}
    source = None
    if not text.lstrip().startswith("{"):
        source = Path(text)
        if not source.is_file():
            raise InputError("--class-names is neither a JSON object nor a JSON file", source)
        text = source.read_text()
    try:
        names = json.loads(text)
        if not isinstance(names, dict):
            raise ValueError("not an object")
        return {int(k): str(v) for k, v in names.items()}
    except ValueError as exc:
        raise InputError(f"--class-names must map class ids to names, e.g. '{{\"1\": \"liver\"}}' ({exc})",
                         source) from None


def _check_output(path: Path, protected: Set[Path], overwrite: bool) -> None:
    """Refuse to write over an input, over an existing file without --overwrite, or onto a folder."""
    if path.resolve() in protected:
        raise InputError("output would replace an input file; choose another output name", path)
    if path.is_dir():
        raise InputError("output is a folder, expected a file name", path)
    if path.exists() and not overwrite:
        raise InputError("output exists (use --overwrite to replace it)", path)


def _expand(inputs: List[str], reporter: Reporter):
    """(items, batch): image files and DICOM series from IN arguments; missing paths are reported."""
    items, batch = [], len(inputs) > 1
    for text in inputs:
        path = Path(text)
        if not path.exists():
            reporter.error(InputError("no such file or folder", path))
        elif path.is_dir():
            found = list_inputs(path)
            if not found:
                reporter.error(InputError("folder holds no images or DICOM series", path))
            batch = batch or found != [path]
            items.extend(found)
        else:
            items.append(path)
    return items, batch


def _companion(image: Path, option: Optional[str], suffix: str, batch: bool, auto: bool) -> Optional[Path]:
    """Scribble / mask file for ``image``: the option's file, or the naming rule in the option's folder / beside."""
    if option is None:
        return find_companion(image, suffix) if auto else None
    path = Path(option)
    if path.is_dir():
        return find_companion(image, suffix, path)
    if batch:
        raise InputError(f"must be a folder of <stem>{suffix} files when several images are given", path)
    return path


# ---------------------------------------------------------------------------------------------- segment
@dataclass
class Job:
    """One image to segment and where its result goes."""

    image: Path
    output: Path
    format: str
    scribbles: Optional[Path] = None
    mask: Optional[Path] = None


def _output_format(args, image: Path, output_file: Optional[Path]) -> str:
    if output_file is not None:
        named = format_from_path(output_file)
        if args.format and named not in (None, args.format):
            raise InputError(f"output name ends in {split_name(output_file)[1]}, which is not --format "
                             f"{args.format} ({FORMAT_EXTENSIONS[args.format]})", output_file)
        if args.format:
            return args.format  # e.g. DICOM files without extension
        if named is None:
            raise InputError(f"cannot tell the output format from the name (use one of "
                             f"{', '.join(FORMAT_EXTENSIONS.values())} or --format)", output_file)
        return named
    if args.format:
        return args.format
    return "png" if split_name(image)[1] in RASTER_EXTENSIONS else "nifti"


def _plan(args, items: List[Path], batch: bool) -> List[Job]:
    """Jobs for the inputs, creating the output folder; raises InputError for a bad output location."""
    out = Path(args.output)
    into_folder = batch or out.is_dir() or args.output.endswith(("/", os.sep))
    ensure_folder(out if into_folder else out.parent)
    jobs = []
    for image in items:
        fmt = _output_format(args, image, None if into_folder else out)
        output = out / f"{input_stem(image)}_labels{FORMAT_EXTENSIONS[fmt]}" if into_folder else out
        jobs.append(Job(image, output, fmt))
    return jobs


def _segmenter(args, overrides: dict):
    """A fresh Segmenter, or one loaded from --model / --init-model with the user's overrides applied."""
    from .segmenter import Segmenter

    model = args.model or args.init_model
    if model is None:
        return Segmenter(SegmentationConfig(**overrides))
    fixed = [f for f in FIXED_BY_MODEL if f in overrides]
    if fixed:
        raise InputError(f"{', '.join(fixed)} is fixed by the saved model", model)
    segmenter = Segmenter.load(model, device=overrides.get("device"))
    changes = {k: v for k, v in overrides.items() if k != "device"}
    if changes:
        segmenter.config = segmenter.config.replace(**changes)
    return segmenter


def _run_job(job: Job, args, overrides: dict, class_names: Dict[int, str], reporter: Reporter) -> None:
    volume = load_volume(job.image, series_uid=args.series_uid)
    if job.output.resolve() in {Path(p).resolve() for p in volume.meta.get("dicom_files", [])}:
        raise InputError("output would replace a file of the input DICOM series", job.output)
    scribbles, names = None, {}
    if job.scribbles is not None:
        scribbles, names = load_scribbles(job.scribbles, volume, args.reference_scribbles)
    mask = None if job.mask is None else load_mask(job.mask, volume)
    segmenter = _segmenter(args, overrides)
    if args.model:
        result = segmenter.predict(volume, mask, progress=reporter)
    else:
        result = segmenter.fit(volume, scribbles, mask, progress=reporter)
    scribbled = scribbles is not None and bool(np.any(scribbles))
    path = save_labels(result.labels, volume, job.output, job.format, class_names={**names, **class_names} or None,
                       scribbled=scribbled)
    info = _summary(result)
    if args.save_model:
        with atomic_output(args.save_model) as tmp:
            segmenter.save(tmp)
        info["model"] = str(args.save_model)
    reporter.written(path, _summary_text(info), **info)


def _check_segment_options(args, parser) -> None:
    if args.model and args.init_model:
        parser.error("--model (predict only) and --init-model (warm start) exclude each other")
    if args.model and (args.scribbles or args.save_model):
        parser.error("--model predicts without training: it takes no --scribbles or --save-model")
    if args.sequence and (args.scribbles or args.model or args.init_model or args.save_model):
        parser.error("--sequence takes no --scribbles, --model, --init-model or --save-model")
    if args.sequence and len(args.inputs) != 1:
        parser.error("--sequence takes one input: a 4D NIfTI file or a folder of frames")
    if args.warm_max_iter is not None and not args.sequence:
        parser.error("--warm-max-iter applies to --sequence only")


def cmd_segment(args, reporter: Reporter, parser) -> int:
    _check_segment_options(args, parser)
    overrides = config_overrides(args)
    SegmentationConfig(**overrides)  # bad values fail here, before any work
    class_names = parse_class_names(args.class_names)
    if args.sequence:
        return _run_sequence(args, overrides, reporter)
    items, batch = _expand(args.inputs, reporter)
    if args.save_model and batch:
        raise InputError("--save-model needs a single input image", args.save_model)
    for option in ("scribbles", "mask"):
        value = getattr(args, option)
        if batch and value and not Path(value).is_dir():
            raise InputError(f"--{option} must be a folder of <stem>_{option} files when several images are given",
                             value)
    jobs = _plan(args, items, batch) if items else []
    protected = {p.resolve() for p in items} | {Path(p).resolve() for p in (args.model, args.init_model) if p}
    if args.save_model:
        _check_output(Path(args.save_model), protected, args.overwrite)
        ensure_folder(Path(args.save_model).resolve().parent)
    for job in jobs:
        reporter.begin(input=job.image)
        try:
            job.scribbles = _companion(job.image, args.scribbles, "_scribbles", batch, auto=True)
            job.mask = _companion(job.image, args.mask, "_mask", batch, auto=False)
            reporter.begin(input=job.image, scribbles=job.scribbles, mask=job.mask)
            companions = {p.resolve() for p in (job.scribbles, job.mask) if p is not None}
            _check_output(job.output, protected | companions, args.overwrite)
            _run_job(job, args, overrides, class_names, reporter)
        except Exception as exc:  # one failed image must not stop the batch
            logging.getLogger(__name__).debug("failure on %s", job.image, exc_info=True)
            reporter.error(exc, job.image)
    return 1 if reporter.failures else 0


def _run_sequence(args, overrides: dict, reporter: Reporter) -> int:
    """Sequence mode: 4D NIfTI -> one 4D label file; folder of frames -> one label file per frame."""
    from .segmenter import segment_sequence

    source = Path(args.inputs[0])
    frames = load_frames(source)
    four_d = source.is_file()
    out = Path(args.output)
    protected = {source.resolve()} | {Path(f.source).resolve() for f in frames}
    if four_d:
        if args.format not in (None, "nifti"):
            raise InputError("a 4D input gives a 4D NIfTI label file; --format must be nifti", source)
        into_folder = out.is_dir() or args.output.endswith(("/", os.sep))
        outputs = [out / f"{input_stem(source)}_labels.nii.gz" if into_folder else out]
        if format_from_path(outputs[0]) != "nifti":
            raise InputError("a 4D input gives a 4D NIfTI label file: name it .nii.gz", outputs[0])
        ensure_folder(outputs[0].parent)
    else:
        ensure_folder(out)
        fmt = args.format or ("png" if frames[0].spatial_dims == 2 and frames[0].affine is None else "nifti")
        outputs = [out / f"{input_stem(Path(f.source))}_labels{FORMAT_EXTENSIONS[fmt]}" for f in frames]
    for path in outputs:
        _check_output(path, protected, args.overwrite)
    masks = None
    if args.mask:
        masks = [load_mask(args.mask, frame) for frame in frames]
    reporter.begin(input=source)
    reporter.frame = 0
    results = segment_sequence(frames, SegmentationConfig(**overrides), masks=masks,
                               warm_max_iter=args.warm_max_iter, progress=reporter)
    reporter.frame = None
    info = {"frames": len(results), "iterations": sum(r.iterations for r in results),
            "seconds": round(sum(r.seconds for r in results), 3)}
    text = f"{len(results)} frames, {info['iterations']} iterations, {info['seconds']:.1f} s"
    if four_d:
        path = save_label_series(np.stack([r.labels for r in results], axis=-1), frames[0], outputs[0])
        reporter.written(path, text, **info)
    else:
        for frame, result, path in zip(frames, results, outputs):
            reporter.written(save_labels(result.labels, frame, path), _summary_text(_summary(result)),
                             **_summary(result))
    return 0


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args, reporter: Reporter, parser) -> int:
    from .segmenter import Segmenter

    overrides = config_overrides(args)
    config = SegmentationConfig(**overrides)
    items, batch = _expand(args.images, reporter)
    if reporter.failures or not items:
        return 1
    out = Path(args.output)
    _check_output(out, {p.resolve() for p in items}, args.overwrite)
    ensure_folder(out.resolve().parent)
    volumes = [load_volume(p) for p in items]
    masks = None
    if args.mask:
        paths = [_companion(p, args.mask, "_mask", False, auto=False) for p in items]
        if not Path(args.mask).is_dir() and len(items) > 1:  # one mask shared by every image (same grid)
            paths = [Path(args.mask)] * len(items)
        masks = [None if p is None else load_mask(p, v) for p, v in zip(paths, volumes)]
    reporter.begin(input=items[0] if len(items) == 1 else None)
    segmenter = Segmenter(config)
    history = segmenter.fit_reference(volumes, masks, progress=reporter)
    with atomic_output(out) as tmp:
        segmenter.save(tmp)
    reporter.written(out, f"trained on {len(volumes)} images, {len(history)} iterations",
                     images=len(volumes), iterations=len(history))
    return 0


# ---------------------------------------------------------------------------------------------- demo
def cmd_demo(args, reporter: Reporter, parser) -> int:
    """Segment the bundled MNI152 sample into 3 labels; write labels + overlay; report Dice vs the tissues."""
    from .metrics import hungarian_dice
    from .overlay import save_overlay
    from .sample import SAMPLE_T1, TISSUE_NAMES, load_sample
    from .segmenter import segment

    config = SegmentationConfig(**{**config_overrides(args), "n_labels": 3})
    folder = ensure_folder(args.output)
    stem = split_name(SAMPLE_T1)[0]
    labels_path, overlay_path = folder / f"{stem}_labels.nii.gz", folder / f"{stem}_overlay.png"
    for path in (labels_path, overlay_path):
        _check_output(path, {Path(SAMPLE_T1).resolve()}, args.overwrite)
    volume, mask, tissues = load_sample()
    reporter.begin(input=SAMPLE_T1)
    result = segment(volume, mask=mask, config=config, progress=reporter)
    dice = hungarian_dice(result.labels, tissues, mask)
    names = {cluster: TISSUE_NAMES[tissue] for tissue, cluster in dice["matching"].items() if tissue in TISSUE_NAMES}
    info = _summary(result)
    reporter.written(save_labels(result.labels, volume, labels_path, class_names=names), _summary_text(info), **info)
    reporter.written(save_overlay(volume, result.labels, overlay_path))
    per_class = {TISSUE_NAMES.get(k, str(k)): round(v, 4) for k, v in dice["per_class"].items() if k != 0}
    parts = ", ".join(f"{name} {value:.3f}" for name, value in per_class.items())
    reporter.result(f"Dice vs the template's tissue classes (one-to-one matching): mean {dice['mean']:.3f} ({parts})",
                    dice_mean=round(dice["mean"], 4), dice=per_class)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def _engine_options(parser, names=("min_labels", "n_labels", "max_iter", "clusters", "seed", "device")) -> None:
    helps = {
        "min_labels": ("--min-labels", int, "K", "stop when at most K labels remain"),
        "n_labels": ("--n-labels", int, "K", "exactly K output labels (most similar clusters merged)"),
        "max_iter": ("--max-iter", int, "N", "at most N optimisation steps"),
        "clusters": ("--clusters", int, "Q", "upper bound on clusters (network output channels)"),
        "seed": ("--seed", int, "S", "random seed (same seed, same result)"),
        "device": ("--device", str, "DEV", "auto, cpu, cuda or cuda:N"),
    }
    group = parser.add_argument_group("engine options (defaults: unsupervised_seg.config.SegmentationConfig)")
    for name in names:
        flag, kind, metavar, text = helps[name]
        group.add_argument(flag, dest=name, type=kind, metavar=metavar, default=None, help=text)


def _run_options(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="bar: tqdm on a terminal (off in CI); json: one JSON object per line on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Segment images and 3D medical volumes without "
                                     "training data (Kim, Kanezaki & Tanaka, IEEE TIP 2020).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = commands.add_parser("segment", help="segment images, volumes or folders of them",
                              description=__doc__.split("train IMAGES")[0].split("\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("inputs", nargs="+", metavar="IN", help="image file, DICOM series folder or folder of images")
    seg.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (one input) or folder")
    seg.add_argument("--scribbles", metavar="S", help="scribble file (one input) or folder of <stem>_scribbles files")
    seg.add_argument("--reference-scribbles", action="store_true",
                     help="scribbles use the reference code's convention: 255 = unlabelled, v = class v + 1")
    seg.add_argument("--mask", metavar="M", help="ROI mask file (one input) or folder of <stem>_mask files")
    seg.add_argument("--format", choices=FORMATS, help="output format (default: from OUT's extension, else nifti; "
                     "png for 2D raster images)")
    seg.add_argument("--class-names", metavar="JSON", help='names of scribble classes: \'{"1": "liver"}\' or a .json file')
    seg.add_argument("--series-uid", metavar="UID", help="DICOM folders: the series to read")
    seg.add_argument("--save-model", metavar="P", help="save the fitted model (one input) for --init-model / --model")
    seg.add_argument("--init-model", metavar="P", help="warm start: continue fitting from a saved model")
    seg.add_argument("--model", metavar="P", help="reference mode: predict with a trained model, no fitting")
    seg.add_argument("--sequence", action="store_true",
                     help="IN is a 4D NIfTI (time last) or a folder of frames; each frame warm-starts the next")
    seg.add_argument("--warm-max-iter", type=int, metavar="N", help="--sequence: steps for frames after the first")
    _engine_options(seg)
    _run_options(seg)
    seg.set_defaults(handler=cmd_segment)

    train = commands.add_parser("train", help="reference mode: train one network on a set of images")
    train.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (e.g. model.pt)")
    train.add_argument("--mask", metavar="M", help="ROI mask for all images, or folder of <stem>_mask files")
    _engine_options(train)
    _run_options(train)
    train.set_defaults(handler=cmd_train)

    demo = commands.add_parser("demo", help="segment the bundled MNI152 sample; write labels and a PNG overlay")
    demo.add_argument("-o", "--output", default="demo_output", metavar="DIR", help="output folder (default: %(default)s)")
    _engine_options(demo, ("max_iter", "seed", "device"))
    _run_options(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed input, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    reporter = Reporter(args.progress)
    try:
        return args.handler(args, reporter, parser)
    except InputError as exc:
        reporter.error(exc)
        return 1
    except KeyboardInterrupt:
        reporter.close()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
