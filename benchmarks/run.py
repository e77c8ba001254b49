"""Benchmark the engine against classical baselines on real volumes; write RESULTS.md, results.json, plots.

    python benchmarks/run.py                                   # the full benchmark (all default cases)
    python benchmarks/run.py --quick                           # smoke run: 4 mm cases, 5 engine iterations
    python benchmarks/run.py --cases mni2mm,mni2mm_noisy --methods kmeans,gmm,otsu,atropos
    python benchmarks/run.py --cases mni2mm --engine-config con_weight=0.5 n_clusters=48 max_iter=300
    python benchmarks/run.py --device cuda                     # fills the GPU section of RESULTS.md
    python benchmarks/run.py --devset                          # the development set -> DEVSET_RESULTS.md
    python benchmarks/run.py --devset --case-dir /tmp/cases --build-only   # build the cases once, e.g. to carry to a GPU

Each (case, method) pair runs in its own child process (benchmarks/worker.py), which reports its
own peak RSS (VmHWM), so methods do not pollute each other. Dice is computed here with unsupervised_seg.demo.metrics.hungarian_dice
(one-to-one matching, same ROI and number of labels for every method). Unsupervised cases run the
engine, KMeans, GaussianMixture, Otsu and Atropos; scribble cases run the engine, Grow-from-seeds
(itk-growcut) and the random walker. A run on device D replaces results.json's entry for D.
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import Case, make_case, parse, with_strokes  # noqa: E402
from methods import UNSUPERVISED, WITH_SCRIBBLES  # noqa: E402

FULL_CASES = (
    "mni2mm",
    "mni2mm_noisy",
    "mni2mm_scribbles",
    "mni2mm_noisy_scribbles",
    "mni1mm",
    "mni1mm_noisy",
    "mni1mm_scribbles",
    "mni1mm_noisy_scribbles",
    "colin1mm",
    "colin1mm_scribbles",
)
QUICK_CASES = ("mni4mm", "mni4mm_noisy", "mni4mm_scribbles")
DEVSET_VOLUMES = ("mni2mm", "colin2mm", "itkt1", "headct", "chestct")  # each real volume, its mask given
DEVSET_CASES = (
    "mni2mm",
    "mni2mm_noisy",
    "mni2mm_nomask",
    "colin2mm",
    "colin2mm_noisy",
    "colin2mm_nomask",
    "itkt1",
    "itkt1_nomask",
    "headct",
    "headct_noisy",
    "headct_nomask",
    "headct_padded",
    "chestct",
    "chestct_noisy",
    "chestct_nomask",
) + tuple(f"{v}_{s}" for v in DEVSET_VOLUMES for s in ("scribbles", "painted", "imbalanced", "sparse"))
DEVSET_METHODS = ("engine", "kmeans", "gmm", "otsu", "atropos", "growcut")
QUICK_MAX_ITER = 5


def parse_engine_config(pairs) -> dict:
    """['con_weight=0.5', 'patch_size=[48,48,48]', 'device=cuda'] -> dict (values as JSON where they parse)."""
    config = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--engine-config expects key=value, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def machine_info() -> dict:
    """CPU cores/model, RAM, library versions of this machine."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    ram = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kb / 2**20:.1f} GiB"
    versions = {}
    for package in ("torch", "monai", "scikit-learn", "SimpleITK", "antspyx", "itk-growcut", "scikit-image", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram": ram,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def print_tail(lines: list) -> None:
    """Print the last 15 lines of a failed method's output (a traceback's end), indented."""
    print("\n".join("    | " + line for line in lines[-15:]), flush=True)


def run_here(spec: dict) -> dict:
    """Run the spec in this process (``--in-process``); returns its result, or {"status": "failed: ..."}."""
    import traceback

    from worker import run_spec

    started = time.perf_counter()
    try:
        run_spec(spec)
    except Exception as exc:  # one failed case must not stop the run: report it and go on
        print_tail(traceback.format_exc().splitlines())
        return {"status": f"failed: {type(exc).__name__}: {str(exc)[:200]}", "process_seconds": 0.0}
    result = json.loads(Path(spec["result_out"]).read_text())
    result.update(status="ok", process_seconds=time.perf_counter() - started, in_process=True)
    return result


def run_child(spec: dict, work: Path, timeout: float) -> dict:
    """Run worker.py on ``spec`` in a child process; returns its result, or {"status": "failed: ..."}."""
    spec_path = work / f"{spec['case']}.{spec['method']}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONHASHSEED="0")
    started = time.perf_counter()
    try:
        child = subprocess.run(
            [sys.executable, str(HERE / "worker.py"), str(spec_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout:.0f} s", "process_seconds": timeout}
    wall = time.perf_counter() - started
    if child.returncode != 0 or not Path(spec["result_out"]).exists():
        lines = child.stdout.strip().splitlines() or ["no output"]
        print_tail(lines)
        tail = lines[-1:]
        return {"status": f"failed: exit {child.returncode}: {tail[0][:200]}", "process_seconds": wall}
    result = json.loads(Path(spec["result_out"]).read_text())
    result.update(status="ok", process_seconds=wall)
    return result


def score(labels: np.ndarray, case: Case) -> dict:
    from unsupervised_seg.demo.metrics import hungarian_dice

    names = case.class_names
    dice = hungarian_dice(labels, case.truth, case.roi)
    out = {
        "dice_mean": dice["mean"],
        "dice_per_class": {names.get(k, str(k)): v for k, v in dice["per_class"].items()},
        "matching": {names.get(k, str(k)): v for k, v in dice["matching"].items()},
    }
    if case.scribbles is not None:  # every stroked class present, stroked voxels kept (issue 12's targets)
        marked = case.scribbles > 0
        out["stroked_kept"] = float(np.mean(labels[marked] == case.scribbles[marked]))
        present = set(np.unique(labels[case.roi]).tolist())
        out["stroked_classes_missing"] = [
            names.get(k, str(k)) for k in np.unique(case.scribbles[marked]).tolist() if k not in present
        ]
    return out


def built_case(name: str, folder: Path) -> tuple:
    """(Case, its .npz) from ``folder``: read where it is there; a stroke case is made from its volume's file when
    that is there (the strokes are made from the truth); otherwise built from the source data. Saved there."""
    case_file = folder / f"{name}.npz"
    if case_file.exists():
        print(f"[case] {name}: from {case_file}", flush=True)
        return Case.load(case_file), case_file
    parsed = parse(name)
    volume_file = folder / f"{parsed.volume}{'_noisy' if parsed.noisy else ''}.npz"
    if parsed.scribbled and volume_file.exists():
        print(f"[case] {name}: strokes on {volume_file}", flush=True)
        case = with_strokes(Case.load(volume_file), name)
    else:
        print(f"[case] {name}: building", flush=True)
        case = make_case(name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp.npz"
    case.save(tmp)
    os.replace(tmp, case_file)
    return case, case_file


def methods_for(case_name: str, wanted) -> list:
    scribbled = parse(case_name)[3]
    names = WITH_SCRIBBLES if scribbled else UNSUPERVISED
    return [m for m in names if wanted is None or m in wanted]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases",
        help=f"comma-separated case names (default: {','.join(FULL_CASES)}; "
        f"with --quick: {','.join(QUICK_CASES)}; with --devset: the development set)",
    )
    parser.add_argument(
        "--devset",
        action="store_true",
        help="the development set (benchmarks/devset.py): its cases and methods by default, results "
        "in devset_results.json and DEVSET_RESULTS.md, no overlay plots",
    )
    parser.add_argument(
        "--methods", help="comma-separated subset of: " + ",".join(sorted(set(UNSUPERVISED) | set(WITH_SCRIBBLES)))
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default: benchmarks/; with --quick: a new temp folder)"
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: 4 mm cases, engine max_iter={QUICK_MAX_ITER}")
    parser.add_argument("--device", default="cpu", help="engine device: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads per method")
    parser.add_argument(
        "--engine-config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SegmentationConfig fields for the engine, e.g. con_weight=0.5 patch_size=[48,48,48]",
    )
    parser.add_argument("--no-refine", action="store_true", help="skip the one-more-stroke refinement measurement")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per method run")
    parser.add_argument("--note", default="", help="text put under the machine line in RESULTS.md")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--case-dir",
        type=Path,
        help="built cases (.npz) are read from DIR where they are, and built and saved there otherwise; carry DIR "
        "to a machine without the source data (a GPU machine) and run there with the same --case-dir",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every method in this process, not one child each (for machines where a process start costs "
        "more than a fit; peak RSS is then the whole run's, peak GPU memory is still per fit; no --timeout)",
    )
    parser.add_argument("--build-only", action="store_true", help="build the cases into --case-dir, run nothing")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="run nothing: rewrite the Markdown beside JSON (DEVSET_RESULTS.md with --devset, else RESULTS.md)",
    )
    args = parser.parse_args(argv)
    if args.report:
        from report import write_devset_report, write_results

        report = args.report.parent / ("DEVSET_RESULTS.md" if args.devset else "RESULTS.md")
        (write_devset_report if args.devset else write_results)(json.loads(args.report.read_text()), report)
        print(f"wrote {report}")
        return 0
    if args.build_only and not args.case_dir:
        parser.error("--build-only needs --case-dir")

    default_cases = DEVSET_CASES if args.devset else QUICK_CASES if args.quick else FULL_CASES
    case_names = args.cases.split(",") if args.cases else list(default_cases)
    for name in case_names:
        try:
            parse(name)
        except ValueError as exc:
            parser.error(str(exc))
    wanted = set(args.methods.split(",")) if args.methods else set(DEVSET_METHODS) if args.devset else None
    if args.devset:
        args.no_plots = True
    engine_config = {"device": args.device, **parse_engine_config(args.engine_config)}
    if args.quick:
        engine_config.setdefault("max_iter", QUICK_MAX_ITER)
    out = args.out or (Path(tempfile.mkdtemp(prefix="benchmark-quick-")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    device_key = "cuda" if args.device.startswith("cuda") else "cpu"

    run = {
        "command": "python benchmarks/run.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "device": args.device,
        "threads": args.threads,
        "engine_config": engine_config,
        "note": args.note,
        "machine": machine_info(),
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="benchmark-work-") as tmp:
        work = Path(tmp)
        labels_by_case = {}
        for name in case_names:
            case, case_file = built_case(name, args.case_dir or work)
            if args.build_only:
                continue
            entry = {
                "description": case.description,
                "shape": list(case.image.shape),
                "spacing": list(case.spacing),
                "roi_voxels": int(case.roi.sum()),
                "n_classes": case.n_classes,
                "mask_given": case.mask is not None,
                "class_names": {str(k): v for k, v in case.class_names.items()},
                "meta": case.meta,
                "scribbled_voxels": int((case.scribbles > 0).sum()) if case.scribbles is not None else 0,
                "class_voxels": {v: int((case.truth == k).sum()) for k, v in case.class_names.items()},
                "stroke_voxels": ", ".join(
                    f"{v} {int((case.scribbles == k).sum())}" for k, v in case.class_names.items()
                )
                if case.scribbles is not None
                else "",
                "methods": {},
            }
            labels_by_case[name] = {}
            for method in methods_for(name, wanted):
                spec = {
                    "case": name,
                    "case_file": str(case_file),
                    "method": method,
                    "threads": args.threads,
                    "engine_config": engine_config,
                    "refine": not args.no_refine,
                    "labels_out": str(work / f"{name}.{method}.labels.npz"),
                    "result_out": str(work / f"{name}.{method}.json"),
                }
                result = run_here(spec) if args.in_process else run_child(spec, work, args.timeout)
                if result["status"] == "ok":
                    labels = np.load(spec["labels_out"])["labels"]
                    result.update(score(labels, case))
                    labels_by_case[name][method] = labels
                    gpu = f"  peak GPU {result['peak_gpu_mb']:6.0f} MB" if "peak_gpu_mb" in result else ""
                    refined = result.get("refinement")
                    refined = f"  refinement {refined['time_ratio']:.1%} Dice {refined['dice']:.3f}" if refined else ""
                    print(
                        f"  {method:14s} Dice {result['dice_mean']:.3f}  {result['seconds']:7.1f} s  "
                        f"peak RSS {result['peak_rss_mb']:6.0f} MB{gpu}{refined}",
                        flush=True,
                    )
                else:
                    print(f"  {method:14s} {result['status']}", flush=True)
                entry["methods"][method] = result
            run["cases"][name] = entry
            save_run(run, out, args.devset, device_key)
            if not args.no_plots:
                from report import plot_overlay

                plot_overlay(case, labels_by_case[name], entry, out / f"overlay_{name}.png")

    if args.build_only:
        print(f"built {len(case_names)} cases in {args.case_dir}")
        return 0
    everything = save_run(run, out, args.devset, device_key)
    if not args.no_plots:
        from report import plot_dice_vs_seconds, plot_history

        plot_dice_vs_seconds(run, out / f"dice_vs_seconds_{device_key}.png")
        plot_history(run, out / f"engine_history_{device_key}.png")
    from report import write_devset_report, write_results

    report = out / ("DEVSET_RESULTS.md" if args.devset else "RESULTS.md")
    (write_devset_report if args.devset else write_results)(everything, report)
    print(f"wrote {report} and {out / results_name(args.devset)}")
    return 0


def results_name(devset: bool) -> str:
    return "devset_results.json" if devset else "results.json"


def save_run(run: dict, out: Path, devset: bool, device_key: str) -> dict:
    """Put ``run`` under ``device_key`` in the results JSON (other devices' runs kept); returns the whole file.
    Called after every case too, so that a run stopped half-way leaves what it measured."""
    results_path = out / results_name(devset)
    everything = json.loads(results_path.read_text()) if results_path.exists() else {}
    everything[device_key] = run
    tmp_path = results_path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(everything, indent=1))
    os.replace(tmp_path, results_path)
    return everything


if __name__ == "__main__":
    sys.exit(main())
