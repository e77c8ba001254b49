"""Child process: run ONE method on ONE case, so that its peak memory is its own.

Usage (run.py does this): python benchmarks/worker.py SPEC.json
SPEC: {"case_file": .npz (cases.Case.save), "method": name, "threads": n, "engine_config": {...},
       "labels_out": .npz, "result_out": .json}
Writes the labels ((X, Y, Z) uint8 under key "labels") and a JSON with seconds, iterations, the
peak RSS after loading (before the method ran), the peak RSS of the whole process and any
method extras; the parent adds the Dice. ``run.py --in-process`` calls ``run_spec`` itself instead (where
a process start costs more than a fit; peak RSS is then the whole run's).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def _limit_threads(threads: int) -> None:
    """Every library in the child uses ``threads`` threads; ANTs gets a fixed random seed."""
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    os.environ["ANTS_RANDOM_SEED"] = "1"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (VmHWM: counts only what this program mapped after exec,
    unlike getrusage, which also counts the parent's memory copied at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM missing from /proc/self/status (Linux only)")


def run_spec(spec: dict) -> None:
    """Run the spec's method on its case; write its labels and its result JSON (each atomically)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    from cases import Case
    from methods import METHODS

    if spec["method"] == "engine":
        import torch

        torch.set_num_threads(spec["threads"])
    case = Case.load(spec["case_file"])
    rss_before = peak_rss_mb()
    method = METHODS[spec["method"]]
    if spec["method"] == "engine":
        out = method(case, spec["threads"], spec.get("engine_config", {}), spec.get("refine", True))
    else:
        out = method(case, spec["threads"])
    labels = out.pop("labels")
    tmp = spec["labels_out"] + ".tmp.npz"
    np.savez_compressed(tmp, labels=labels.astype(np.uint8))
    os.replace(tmp, spec["labels_out"])
    out["rss_after_loading_mb"] = rss_before
    out["peak_rss_mb"] = peak_rss_mb()
    tmp = spec["result_out"] + ".tmp"
    Path(tmp).write_text(json.dumps(out))
    os.replace(tmp, spec["result_out"])


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    _limit_threads(spec["threads"])
    run_spec(spec)


if __name__ == "__main__":
    main(sys.argv[1])
