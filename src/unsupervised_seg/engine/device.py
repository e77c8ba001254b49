"""Where the engine computes: device choice and the memory a training step may use there."""

from __future__ import annotations

import os
import sys
import tempfile

import torch

from ..core.errors import InputError


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
