"""Sequence mode: frames (video, 4D time points) segmented in order, each warm-started from the previous one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional, Sequence

from ..core.errors import InputError
from ..core.progress import ProgressCallback
from ..core.volume import Volume, validate_mask
from .config import SegmentationConfig
from .preprocess import normalise_intensity
from .result import SegmentationResult
from .segmenter import Segmenter


def segment_sequence(
    frames: Sequence[Volume],
    config: Optional[SegmentationConfig] = None,
    masks=None,
    warm_max_iter: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    **overrides,
) -> List[SegmentationResult]:
    """Sequence mode: frames (video, 4D time points) in order, each warm-started from the previous network.

    The channel -> label mapping of the first frame is kept, so a structure keeps its label over time.
    Every frame is checked before the first fit; an InputError names its frame ("frame k", counted from 0).
    """
    seg = Segmenter(config, **overrides)
    masks = list(masks) if masks is not None else [None] * len(frames)
    for index, (frame, mask) in enumerate(zip(frames, masks)):
        with _naming_frame(index):
            cfg = seg._check(frame, None, mask)
            normalise_intensity(frame, validate_mask(mask, frame), cfg.lower_percentile, cfg.upper_percentile)
    results = []
    for index, (frame, mask) in enumerate(zip(frames, masks)):
        max_iter = None if index == 0 else warm_max_iter
        with _naming_frame(index):
            results.append(seg.fit(frame, mask=mask, max_iter=max_iter, progress=progress, keep_labels=index > 0))
    return results


@contextmanager
def _naming_frame(index: int):
    """Re-raise an InputError with "frame <index>" in front of its problem (same file)."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"frame {index} (counted from 0): {exc.problem}", exc.path) from None
