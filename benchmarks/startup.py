"""How fast the command line answers before any work: ``--help`` and an error about a missing input.

    python benchmarks/startup.py [--repeats 7]     # prints a Markdown table; median and best of the repeats

Each command runs in a fresh process (``python -m unsupervised_seg ...``), as a user types it. Neither may
import torch or MONAI; the target is < 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "--help": ["--help"],
    "segment --help": ["segment", "--help"],
    "segment missing.nii.gz -o x.nii.gz": ["segment", "missing.nii.gz", "-o", "x.nii.gz"],
}


def time_command(args, repeats: int):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "unsupervised_seg", *args], capture_output=True, check=False)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"`python benchmarks/startup.py --repeats {repeats}`; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}\n"
    )
    print("| command | median s | best s |\n|---|---|---|")
    for name, args in COMMANDS.items():
        median, best = time_command(args, repeats)
        print(f"| `unsupervised-seg {name}` | {median:.3f} | {best:.3f} |")


if __name__ == "__main__":
    main()
