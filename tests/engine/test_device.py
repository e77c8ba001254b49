"""Host memory on the CPU: freed tensor memory stays in the process for the next step (glibc)."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import torch
from unsupervised_seg import Segmenter
Segmenter(device="cpu")
tensor = torch.empty(100 << 20, dtype=torch.uint8)  # a 100 MB tensor, as a 3D step's are
address = tensor.data_ptr()
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
print(any(int(a, 16) <= address < int(b, 16) for a, b in (span.split("-") for span in heap)))
"""


def _tensor_in_heap(**env) -> bool:
    environment = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**environment, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only (Linux)")
def test_a_cpu_segmenter_keeps_large_tensors_in_the_heap_unless_the_user_set_malloc():
    """Each process is fresh: the setting is process-wide. Without it, glibc maps a 100 MB block apart from the
    heap and unmaps it at free (every CPU step then page-faults its tensors in again); a user's own
    MALLOC_MMAP_MAX_ is left as it is."""
    assert _tensor_in_heap()
    assert not _tensor_in_heap(MALLOC_MMAP_MAX_="65536")
