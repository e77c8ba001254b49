"""What a fit or prediction returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class SegmentationResult:
    """Outcome of a fit or predict.

    labels:      (*spatial) int32 on the input grid; 1..K inside the ROI, 0 outside. Scribble class
                 k is label k; other clusters follow, ordered by mean intensity.
    n_labels:    number of distinct labels inside the ROI.
    iterations:  optimisation steps taken (0 for predict).
    stop_reason: "min_labels", "converged", "shrank" (head_shrink), "max_iter" or "predict".
    history:     one dict per iteration: iteration, phase ("network", or "head" when only the clustering
                 head trains on cached features), loss, similarity, continuity, scribble, n_labels, and
                 level (number of halvings) when trained coarse to fine.
    """

    labels: np.ndarray
    n_labels: int
    iterations: int
    stop_reason: str
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
