"""Scribble label maps: validation and conversion from other conventions.

Engine convention: an integer array on the image grid, 0 = unlabelled, k >= 1 = class k.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InputError

REFERENCE_UNLABELLED = 255  # the reference code's PNG convention: 255 = no label, other values = class


def validate_scribbles(
    scribbles: Optional[np.ndarray], spatial_shape: Sequence[int], max_classes: int, source=None
) -> Optional[np.ndarray]:
    """Return scribbles as int64 (*spatial), or None if absent or empty; raise InputError if invalid."""
    if scribbles is None:
        return None
    scribbles = np.asarray(scribbles)
    if scribbles.ndim == len(spatial_shape) + 1 and scribbles.shape[0] == 1:
        scribbles = scribbles[0]
    if tuple(scribbles.shape) != tuple(spatial_shape):
        raise InputError(f"scribbles have shape {tuple(scribbles.shape)}, the image {tuple(spatial_shape)}", source)
    if np.issubdtype(scribbles.dtype, np.floating):
        if not np.all(np.isfinite(scribbles)) or np.any(scribbles != np.round(scribbles)):
            raise InputError("scribbles must be integer class ids (0 = unlabelled)", source)
    elif not np.issubdtype(scribbles.dtype, np.integer) and scribbles.dtype != bool:
        raise InputError(f"scribbles must be integer class ids, got dtype {scribbles.dtype}", source)
    scribbles = scribbles.astype(np.int64)
    if scribbles.min() < 0:
        raise InputError(
            f"scribbles contain negative class ids (min {scribbles.min()}); 0 = unlabelled, k >= 1 = class k", source
        )
    n_classes = int(scribbles.max())
    if n_classes == 0:
        return None
    if n_classes > max_classes:
        raise InputError(
            f"scribbles use class ids up to {n_classes}, more than the {max_classes} clusters of the network", source
        )
    return scribbles


def scribble_classes(scribbles: Optional[np.ndarray]) -> int:
    """Number of scribble classes: the largest class id (ids 1..K; unused ids still reserve a label)."""
    return 0 if scribbles is None else int(scribbles.max())


def from_reference_convention(labels: np.ndarray) -> np.ndarray:
    """Reference code convention (255 = unlabelled, v = class v, v from 0) -> engine (0 = unlabelled, v + 1)."""
    labels = np.asarray(labels).astype(np.int64)
    return np.where(labels == REFERENCE_UNLABELLED, 0, labels + 1)
