"""Where the engine computes: device choice, the memory a training step may use there, and how host memory is
reused between steps."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
import tempfile

import torch

from ..core.errors import InputError

log = logging.getLogger(__name__)
M_MMAP_MAX = -4  # glibc mallopt parameter: how many blocks malloc may serve by mmap at once


@functools.cache  # once per process: the setting is process-wide, and libc_ver reads the interpreter's file
def reuse_freed_host_memory() -> bool:
    """Have glibc's malloc serve every block from its heap (``mallopt(M_MMAP_MAX, 0)``) so that the memory of a
    freed tensor is reused by the next one. By default each block above 32 MB is mapped at malloc and unmapped at
    free, so every CPU training step page-faults all of its tensors in afresh: on a chest CT's head step (32
    channels, 431 k voxels) 0.61 s, 0.26 s from the heap (benchmarks/RESULTS.md). Process-wide; left as it is
    where the user set glibc's own MALLOC_MMAP_MAX_ or GLIBC_TUNABLES, and off glibc (macOS, Windows, musl).
    Returns whether it was set."""
    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_MAX_" in os.environ or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        done = bool(ctypes.CDLL(None).mallopt(M_MMAP_MAX, 0))
    except (OSError, AttributeError):
        return False
    log.debug("glibc malloc: freed tensor memory is kept for reuse (M_MMAP_MAX = 0): %s", done)
    return done


def import_dynamo_quietly() -> None:
    """Import torch._dynamo with torch inductor's cache folder pointed at a temporary folder, removed at once.

    The first optimiser imports torch._dynamo (torch.optim wraps ``Optimizer.add_param_group`` with
    ``torch._disable_dynamo``), and that import creates the inductor cache folder ``$TMPDIR/torchinductor_<user>``,
    which the engine never uses (nothing is compiled): without this a run leaves that folder behind. A cache
    folder the user chose (TORCHINDUCTOR_CACHE_DIR) is left alone.
    """
    if "torch._dynamo" in sys.modules or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    with tempfile.TemporaryDirectory(prefix="unsupervised-seg-inductor-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            import torch._dynamo  # noqa: F401
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
    return device


def is_available(name: str) -> bool:
    """Whether this machine has the device ``name`` ('auto', 'cpu', 'cuda', 'cuda:N'; False for no device name)."""
    if name in ("auto", "cpu"):
        return True
    try:
        device = torch.device(name)
    except RuntimeError:
        return False
    return device.type != "cuda" or (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count())


def available_memory(device: torch.device) -> int:
    """Bytes that a training step may use on ``device``: half the free GPU memory, or a quarter of
    the available RAM capped at 512 MiB on CPU (where larger patches only cost time)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        import psutil

        avail = psutil.virtual_memory().available
    except ImportError:  # psutil is optional
        avail = 8 << 30
    return min(avail // 4, 512 << 20)
