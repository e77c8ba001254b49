"""Typed progress events: what the engine and the faces report while they work.

Every event turns into one flat JSON-able dict with a "stage" key (``to_dict``) and back (``from_dict``):
the command line's ``--progress json`` writes these dicts one per line, and the Slicer module reads them
from its background process. Unknown keys are kept in ``extra`` so that newer writers stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Dict, List, Optional, Type


@dataclass
class ProgressEvent:
    """Base of all events; ``extra`` holds context a face adds (e.g. "input", "frame")."""

    stage: ClassVar[str] = ""
    extra: Dict[str, object] = field(default_factory=dict, kw_only=True)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {"stage": self.stage, **{k: v for k, v in values.items() if v is not None}, **self.extra}

    @staticmethod
    def from_dict(data: dict) -> ProgressEvent:
        kind = _KINDS.get(str(data.get("stage")))
        if kind is None:
            raise ValueError(f"unknown progress stage {data.get('stage')!r}")
        names = {f.name for f in fields(kind)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return kind(**known, extra={k: v for k, v in data.items() if k not in names and k != "stage"})


@dataclass
class FitStep(ProgressEvent):
    """One optimisation step. phase: "network" (all layers) or "head" (the clustering head on cached
    features); fraction: the share of the run's work estimated done (0..1), from the iterations and
    how close the label changes are to the convergence tolerance; changed: the share of ROI labels
    that changed over the last convergence window (on the steps that check it)."""

    stage: ClassVar[str] = "fit"
    iteration: int
    max_iter: int
    phase: str
    n_labels: int
    loss: float
    similarity: float
    continuity: float
    scribble: float = 0.0
    changed: Optional[float] = None
    tolerance: Optional[float] = None
    fraction: Optional[float] = None


@dataclass
class Predicting(ProgressEvent):
    """Full-volume prediction by sliding window has started."""

    stage: ClassVar[str] = "predict"
    patch_size: List[int]


@dataclass
class Done(ProgressEvent):
    """A fit or prediction ended: steps taken, labels, and which rule stopped it."""

    stage: ClassVar[str] = "done"
    iteration: int
    n_labels: int
    stop_reason: str


@dataclass
class Written(ProgressEvent):
    """An output file was written (``extra``: a summary such as n_labels, seconds, model)."""

    stage: ClassVar[str] = "written"
    path: str


@dataclass
class Failed(ProgressEvent):
    """An input failed: the file (when known) and a one-line message."""

    stage: ClassVar[str] = "error"
    path: Optional[str] = None
    message: str = ""


@dataclass
class Result(ProgressEvent):
    """A result that is not a file (e.g. the demo's Dice), in ``extra``."""

    stage: ClassVar[str] = "result"


_KINDS: Dict[str, Type[ProgressEvent]] = {k.stage: k for k in (FitStep, Predicting, Done, Written, Failed, Result)}

ProgressCallback = Callable[[ProgressEvent], None]
