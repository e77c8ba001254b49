"""Reference mode against a plain fit, on the bundled sample, in one run: what a user pays for ``train``.

Times, as a user runs them (each command in its own process, wall clock, imports included):

    unsupervised-seg segment SAMPLE --mask MASK -o seg.nii.gz            # plain fit
    unsupervised-seg train SAMPLE --mask MASK -o m.pt                    # reference mode
    unsupervised-seg segment SAMPLE --mask MASK --model m.pt -o ref.nii.gz   # apply it, no fitting

``--repeats N`` runs the segment / train pair N times, interleaved, so that a change in the machine's
load hits both alike; the ratio train / segment of each pair is what counts (absolute seconds depend
on the load). Dice: one-to-one (Hungarian) against the sample's tissue labels inside the brain mask.
The result is appended to benchmarks/RESULTS.md (``--results``) with the command, the machine and its load.

    python benchmarks/reference_mode.py [--repeats 2] [--results benchmarks/RESULTS.md] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np

from unsupervised_seg.demo.metrics import hungarian_dice
from unsupervised_seg.demo.sample import SAMPLE_MASK, SAMPLE_T1, SAMPLE_TISSUES

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import KEPT_MARKER  # noqa: E402  (RESULTS.md is rewritten by run.py; what follows it is kept)


def cli(*args) -> list:
    return [sys.executable, "-m", "unsupervised_seg", *map(str, args)]


def timed(argv: list, env: dict) -> dict:
    """Run ``argv``; wall seconds, exit code, and the JSON events it printed (``--progress json``)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(argv)}\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"seconds": seconds, "events": events}


def dice_of(path: Path) -> float:
    labels = np.asarray(nib.load(str(path)).dataobj)
    mask = np.asarray(nib.load(str(SAMPLE_MASK)).dataobj) > 0
    tissues = np.asarray(nib.load(str(SAMPLE_TISSUES)).dataobj)
    return hungarian_dice(labels, tissues, mask)["mean"]


def machine() -> str:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return (
        f"{len(os.sched_getaffinity(0))} cores ({cpu}); Python {platform.python_version()}, "
        f"torch {metadata.version('torch')}, unsupervised-seg {metadata.version('unsupervised-seg')}"
    )


def code_version() -> str:
    """The commit of this checkout (with "+ uncommitted changes" when the tree differs), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def measure(repeats: int, work: Path) -> dict:
    env = dict(os.environ, CI="true")
    mask = ["--mask", SAMPLE_MASK]
    runs = []
    for index in range(repeats):
        seg_out, model, ref_out = work / f"seg{index}.nii.gz", work / f"m{index}.pt", work / f"ref{index}.nii.gz"
        segment = timed(cli("segment", SAMPLE_T1, *mask, "-o", seg_out, "--progress", "json"), env)
        train = timed(cli("train", SAMPLE_T1, *mask, "-o", model, "--progress", "json"), env)
        apply = timed(cli("segment", SAMPLE_T1, *mask, "--model", model, "-o", ref_out, "--progress", "json"), env)
        seg_written = next(e for e in segment["events"] if e["stage"] == "written")
        train_written = next(e for e in train["events"] if e["stage"] == "written")
        runs.append(
            {
                "segment_s": segment["seconds"],
                "segment_fit_s": seg_written["seconds"],
                "segment_iterations": seg_written["iterations"],
                "segment_labels": seg_written["n_labels"],
                "train_s": train["seconds"],
                "train_iterations": train_written["iterations"],
                "apply_s": apply["seconds"],
                "ratio": train["seconds"] / segment["seconds"],
                "dice_segment": dice_of(seg_out),
                "dice_model": dice_of(ref_out),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    return {"runs": runs}


def report(result: dict, command: str, load_before: str, load_after: str) -> list:
    lines = [
        "### Reference mode: `train` against `segment` (benchmarks/reference_mode.py)",
        "",
        f"Command: `{command}` ({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})",
        "",
        f"Code: {code_version()}. Machine: {machine()}. Load average (1 / 5 / 15 min) {load_before} before, {load_after} after: "
        "the machine was shared with other jobs, so absolute seconds are inflated and vary; the ratio of "
        "each interleaved pair is the measurement.",
        "",
        "Commands, each its own process (wall seconds, imports included): `unsupervised-seg segment SAMPLE "
        "--mask MASK -o seg.nii.gz`, `unsupervised-seg train SAMPLE --mask MASK -o m.pt`, "
        "`unsupervised-seg segment SAMPLE --mask MASK --model m.pt -o ref.nii.gz` (SAMPLE, MASK: the bundled "
        "`mni152_t1_2mm.nii.gz`, `mni152_brainmask_2mm.nii.gz`). Dice: one-to-one against the bundled tissue "
        "labels inside the mask.",
        "",
        "| pair | segment s (fit s) | iterations | train s | iterations | train / segment | segment --model s "
        "| Dice segment | Dice segment --model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["runs"], 1):
        lines.append(
            f"| {i} | {r['segment_s']:.1f} ({r['segment_fit_s']:.1f}) | {r['segment_iterations']} | "
            f"{r['train_s']:.1f} | {r['train_iterations']} | **{r['ratio']:.2f}** | {r['apply_s']:.1f} | "
            f"{r['dice_segment']:.3f} | {r['dice_model']:.3f} |"
        )
    return lines + [""]


def append(path: Path, lines: list) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if KEPT_MARKER not in text:
        text = text.rstrip("\n") + "\n\n" + KEPT_MARKER + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="interleaved segment / train pairs (default 2)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="file the table is appended to")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/reference_mode.py", *(argv if argv is not None else sys.argv[1:])])
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="reference-mode-") as work:
        result = measure(args.repeats, Path(work))
    lines = report(result, command, load_before, load())
    print("\n".join(lines))
    if not args.no_write:
        append(args.results, lines)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
