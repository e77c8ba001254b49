"""Command line: ``unsupervised-seg segment | train | demo`` (also ``python -m unsupervised_seg``).

A thin face over ``unsupervised_seg.api``: the parser (parser.py), the reporter (reporter.py) and the
commands below. Heavy modules (torch, MONAI, the engine) are imported only when a command runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from ..core.errors import InputError
from .parser import PROG, build_parser, engine_overrides
from .reporter import Reporter


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
        raise InputError(
            f'--class-names must map class ids to names, e.g. \'{{"1": "liver"}}\' ({exc})', source
        ) from None


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
    from .. import api

    _check_segment_options(args, parser)
    options = engine_overrides(args)
    if args.sequence:
        api.segment_sequence_files(
            args.inputs[0],
            args.output,
            args.mask,
            args.format,
            overwrite=args.overwrite,
            warm_max_iter=args.warm_max_iter,
            progress=reporter,
            **options,
        )
    else:
        api.segment_files(
            args.inputs,
            args.output,
            args.scribbles,
            args.mask,
            args.format,
            overwrite=args.overwrite,
            model=args.model,
            init_model=args.init_model,
            save_model=args.save_model,
            class_names=parse_class_names(args.class_names),
            reference_scribbles=args.reference_scribbles,
            series_uid=args.series_uid,
            overlay=args.overlay,
            progress=reporter,
            **options,
        )
    return 1 if reporter.failures else 0


def cmd_train(args, reporter: Reporter, parser) -> int:
    from .. import api

    api.train_files(
        args.images, args.output, args.mask, overwrite=args.overwrite, progress=reporter, **engine_overrides(args)
    )
    return 1 if reporter.failures else 0


def cmd_demo(args, reporter: Reporter, parser) -> int:
    """Segment the bundled MNI152 sample into 3 labels; write labels + overlay; report Dice vs the tissues.

    Writes nothing outside the output folder: MONAI imports matplotlib when it is installed (the dev extra),
    which would keep a font cache in ~/.cache/matplotlib; unless MPLCONFIGDIR is set it goes to a temporary
    folder, removed at the end (the engine keeps torch's cache folder out of $TMPDIR, see engine/device.py)."""
    with tempfile.TemporaryDirectory(prefix="unsupervised-seg-matplotlib-") as folder:
        chosen = os.environ.setdefault("MPLCONFIGDIR", folder)
        try:
            from .demo import run_demo

            return run_demo(args.output, args.overwrite, reporter, **engine_overrides(args))
        finally:
            if chosen == folder:
                del os.environ["MPLCONFIGDIR"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed input, 2 usage error, 130 interrupted)."""
    parser = build_parser({"segment": cmd_segment, "train": cmd_train, "demo": cmd_demo})
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
