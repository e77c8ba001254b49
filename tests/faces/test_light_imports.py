"""The io layer and the command line's answers before any work (help, usage and input errors) load no torch:
that is what keeps them instant (benchmarks/startup.py measures the seconds)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
{code}
heavy = sorted(m for m in ("torch", "monai", "sklearn") if m in sys.modules)
print("heavy modules:", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "code",
    [
        "import unsupervised_seg.io",
        "import unsupervised_seg.core.progress, unsupervised_seg.engine.config",
        "from unsupervised_seg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from unsupervised_seg.cli import main\nassert main(['segment', 'missing.nii.gz', '-o', 'x.nii.gz']) == 1",
    ],
    ids=["io", "core-and-config", "help", "missing-input"],
)
def test_no_heavy_import(code, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("heavy modules:"), proc.stdout[-500:]
