"""Atomic output: write to a hidden temporary name in the target folder, then rename.

A reader never sees a half-written file, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path

from ..core.errors import InputError
from .paths import split_name


def ensure_folder(folder) -> Path:
    """Create ``folder`` (and parents) if needed; raise InputError naming it if it cannot hold new files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError("output folder cannot be created: a file of that name is in the way", folder) from None
    except OSError as exc:
        raise InputError(f"output folder cannot be created ({exc.strerror})", folder) from None
    if not folder.is_dir():
        raise InputError("output folder is not a folder", folder)
    try:  # a real probe: access() says yes to root even where writes fail (read-only mounts, /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".unsupervised-seg-probe-"):
            pass
    except OSError as exc:
        raise InputError(f"output folder is not writable ({exc.strerror or exc})", folder) from None
    return folder


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path`` with the same extension; on success rename it to ``path``.

    The extension is kept because writers (nibabel, SimpleITK, Pillow) choose the format from it.
    On any error the temporary file is removed and the exception propagates; an OSError becomes an
    InputError naming ``path`` (never the temporary name).
    """
    path = Path(path)
    ensure_folder(path.parent)
    stem, ext = split_name(path)
    tmp = path.parent / f".{stem}.{uuid.uuid4().hex[:8]}.tmp{ext}"
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"writer produced no file for {path}")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise InputError(f"cannot write the output ({exc.strerror or exc})", path) from None
        raise
