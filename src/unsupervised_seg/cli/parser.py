"""The command line's parser: ``unsupervised-seg segment | train | demo``. Imports nothing heavy, so that
``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse

from ..core.version import __version__
from ..engine.config import SegmentationConfig
from ..io.paths import FORMAT_EXTENSIONS

PROG = "unsupervised-seg"

SEGMENT_HELP = """\
One input file: OUT is the output file (or an existing folder to write <stem>_labels.<ext> into).
Several inputs, or a folder of images: a batch; OUT is a folder receiving <stem>_labels.<ext>.
A folder holding DICOM files (and no other images) is one DICOM series.

Companion files: <stem>_scribbles.<ext> and <stem>_mask.<ext> beside an image are used when present
(ext one of .seg.nrrd, .nii.gz, .nii, .nrrd, .mha, .png); --scribbles / --mask name a file (one input)
or a folder holding such files instead.

A bad input is reported as one line on stderr and skipped; the exit code is 1 if any input failed.
Existing outputs are kept unless --overwrite; an input is never written over. Every output is checked
before any fitting starts.

Progress: a bar on a terminal (not in CI), --progress json (one JSON object per line on stdout:
stages fit, predict, done, written, error), or --progress none."""

# option name -> (flag, type, metavar, help, SegmentationConfig field)
_ENGINE_OPTIONS = {
    "min_labels": ("--min-labels", int, "K", "stop when at most K labels remain", "min_labels"),
    "n_labels": ("--n-labels", int, "K", "exactly K output labels (most similar clusters merged)", "n_labels"),
    "min_cluster_fraction": (
        "--min-cluster-fraction",
        float,
        "F",
        "a cluster holding less than this share of the "
        "ROI joins the larger one of nearest mean intensity (0: keep every cluster)",
        "min_cluster_fraction",
    ),
    "max_iter": ("--max-iter", int, "N", "at most N optimisation steps", "max_iter"),
    "clusters": (
        "--clusters",
        int,
        "Q",
        "upper bound on clusters (network output channels; 32, --reference-defaults 100)",
        "n_clusters",
    ),
    "upper_percentile": (
        "--upper-percentile",
        float,
        "P",
        "intensities above this percentile of the ROI are clipped (default 99.9 in 3D, which keeps the tail "
        "of a small bright class, e.g. thin bone on a noisy CT; 99.5 in 2D)",
        "upper_percentile",
    ),
    "seed": ("--seed", int, "S", "random seed (same seed, same result)", "seed"),
    "device": ("--device", str, "DEV", "auto, cpu, cuda or cuda:N", "device"),
    "foreground": (
        "--foreground",
        str,
        "auto|none",
        "without a mask, auto clusters the anatomy only (padding and "
        "the dark space around it get label 0); none clusters the whole image (3D default: auto, "
        "2D: none)",
        "foreground",
    ),
}


REFERENCE_DEFAULTS_HELP = (
    "the reference code's exact settings (Kim, Kanezaki & Tanaka 2020: 100 clusters, no "
    "initial clustering, constant learning rate, full resolution, no convergence stop) "
    "instead of the faster defaults; the merge of tiny clusters stays: add "
    "--min-cluster-fraction 0 for none"
)


def engine_overrides(args) -> dict:
    """SegmentationConfig fields the user set on the command line (defaults stay in engine/config.py)."""
    options = {
        spec[4]: getattr(args, name) for name, spec in _ENGINE_OPTIONS.items() if getattr(args, name, None) is not None
    }
    if getattr(args, "reference_defaults", None):
        options["reference_defaults"] = True
    return options


def _engine_options(parser, names=tuple(_ENGINE_OPTIONS), reference_defaults: bool = True) -> None:
    defaults = SegmentationConfig()
    group = parser.add_argument_group("engine options")
    for name in names:
        flag, kind, metavar, text, field = _ENGINE_OPTIONS[name]
        default = getattr(defaults, field)
        if default is not None:
            text += f" (default: {default})"
        group.add_argument(flag, dest=name, type=kind, metavar=metavar, default=None, help=text)
    if reference_defaults:
        group.add_argument(
            "--reference-defaults",
            dest="reference_defaults",
            action="store_true",
            default=None,
            help=REFERENCE_DEFAULTS_HELP,
        )


def _run_options(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar: on a terminal (off in CI); json: one JSON object per line on stdout (default: %(default)s)",
    )


def build_parser(handlers: dict) -> argparse.ArgumentParser:
    """The parser; ``handlers`` maps each command name to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment images and 3D medical volumes without "
        "training data (Kim, Kanezaki & Tanaka, IEEE TIP 2020).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = commands.add_parser(
        "segment",
        help="segment images, volumes or folders of them",
        description=SEGMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seg.add_argument("inputs", nargs="+", metavar="IN", help="image file, DICOM series folder or folder of images")
    seg.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (one input) or folder")
    seg.add_argument("--scribbles", metavar="S", help="scribble file (one input) or folder of <stem>_scribbles files")
    seg.add_argument(
        "--reference-scribbles",
        action="store_true",
        help="scribbles use the reference code's convention: 255 = unlabelled, v = class v + 1",
    )
    seg.add_argument(
        "--mask",
        metavar="M",
        help="ROI mask file (one input) or folder of <stem>_mask files "
        "(default: <stem>_mask.<ext> beside the image, if present)",
    )
    seg.add_argument(
        "--format",
        choices=tuple(FORMAT_EXTENSIONS),
        help="output format (default: from OUT's extension, else nifti; png for 2D raster images)",
    )
    seg.add_argument(
        "--class-names", metavar="JSON", help='names of scribble classes: \'{"1": "liver"}\' or a .json file'
    )
    seg.add_argument(
        "--overlay",
        action="store_true",
        help="also write <output stem>_overlay.png: the labels on the image (2D), or three planes of a volume",
    )
    seg.add_argument("--series-uid", metavar="UID", help="DICOM folders: the series to read")
    seg.add_argument("--save-model", metavar="P", help="save the fitted model (one input) for --init-model / --model")
    seg.add_argument("--init-model", metavar="P", help="warm start: continue fitting from a saved model")
    seg.add_argument("--model", metavar="P", help="reference mode: predict with a trained model, no fitting")
    seg.add_argument(
        "--sequence",
        action="store_true",
        help="IN is a 4D NIfTI (time last) or a folder of frames; each frame warm-starts the next",
    )
    seg.add_argument("--warm-max-iter", type=int, metavar="N", help="--sequence: steps for frames after the first")
    _engine_options(seg)
    _run_options(seg)
    seg.set_defaults(handler=handlers["segment"])

    train = commands.add_parser("train", help="reference mode: train one network on a set of images")
    train.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (e.g. model.pt)")
    train.add_argument(
        "--mask",
        metavar="M",
        help="ROI mask for all images, or folder of <stem>_mask files "
        "(default: <stem>_mask.<ext> beside each image, if present)",
    )
    _engine_options(train)
    _run_options(train)
    train.set_defaults(handler=handlers["train"])

    demo = commands.add_parser("demo", help="segment the bundled MNI152 sample; write labels and a PNG overlay")
    demo.add_argument(
        "-o", "--output", default="demo_output", metavar="DIR", help="output folder (default: %(default)s)"
    )
    _engine_options(demo, ("max_iter", "seed", "device"), reference_defaults=False)
    _run_options(demo)
    demo.set_defaults(handler=handlers["demo"])
    return parser
