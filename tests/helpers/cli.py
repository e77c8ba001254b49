"""The command line as a user runs it: ``python -m unsupervised_seg`` in a subprocess."""

import os
import subprocess
import sys


def run(*args, cwd=None, env=None, timeout=900):
    """``python -m unsupervised_seg ARGS`` (CI=true: no progress bar; 2 threads); the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "CI": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "unsupervised_seg", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
