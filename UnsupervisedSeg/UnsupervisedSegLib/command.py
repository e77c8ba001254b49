"""The module's parameters and the engine command line the module runs in its background process.

The engine is only ever run as ``python -m unsupervised_seg segment ...``; this file knows its options
and nothing else of the engine. Standard library only.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Mapping, Optional

DEVICES = ("auto", "cpu", "cuda")
# Environment of the engine process: unbuffered UTF-8 output, so progress lines arrive as they are printed.
ENGINE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


@dataclass(frozen=True)
class RunParameters:
    """The module's parameters as the engine command line takes them.

    n_labels: exact number of output labels, 0 = let the run decide (the engine's n_labels=None).
    max_iter: iterations of a full run (Apply); refine_iter: iterations of a warm-started Refine.
    n_clusters: q, the network's number of clusters ("detail": more is finer and slower).
    The defaults are the engine's (SegmentationConfig and its 3D defaults; checked in CI), except
    refine_iter, which only the module has.
    """

    n_labels: int = 0
    max_iter: int = 1000
    refine_iter: int = 50
    n_clusters: int = 32
    device: str = "auto"
    seed: int = 0

    def problems(self, n_scribble_classes: int = 0) -> List[str]:
        """Human-readable reasons these parameters cannot run ([] when they can)."""
        found = []
        if self.device not in DEVICES:
            found.append(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.max_iter < 1 or self.refine_iter < 1:
            found.append("iterations must be at least 1")
        if self.n_clusters < 2:
            found.append("detail (number of clusters) must be at least 2")
        if self.n_labels < 0:
            found.append("number of labels must be 0 (automatic) or more")
        if self.n_labels and self.n_labels > self.n_clusters:
            found.append(f"number of labels ({self.n_labels}) exceeds the number of clusters ({self.n_clusters})")
        if self.n_labels and n_scribble_classes > self.n_labels:
            found.append(f"{n_scribble_classes} scribble segments need at least as many labels, "
                         f"not {self.n_labels}")
        return found

    def for_refine(self) -> "RunParameters":
        """The same parameters with the warm-start iteration count as ``max_iter``."""
        return replace(self, max_iter=self.refine_iter)


def class_names_json(class_names: Mapping[int, str]) -> str:
    """``--class-names`` value: a JSON object {"1": "Liver", ...} with string keys."""
    return json.dumps({str(int(k)): str(v) for k, v in sorted(class_names.items())}, ensure_ascii=False)


def build_command(input_path, scribble_path, output_path, params: RunParameters, model_in=None, model_out=None,
                  python_executable: Optional[str] = None, mask_path=None,
                  class_names: Optional[Mapping[int, str]] = None) -> List[str]:
    """The engine command line the module runs in its background process.

    ``python -m unsupervised_seg segment IN -o OUT --format seg.nrrd --progress json ...`` with one
    input file: extra channels travel as the vector components of that file (several IN arguments
    would be a batch for the command line). ``model_in`` warm-starts the fit from a saved model
    (Refine) for ``params.max_iter`` iterations; the number of clusters is then the model's, so
    ``--clusters`` is left out. ``model_out`` saves the fitted model for a later Refine.
    Raises ValueError when ``params`` cannot run (see RunParameters.problems).
    """
    problems = params.problems(len(class_names or {}))
    if problems:
        raise ValueError("; ".join(problems))
    command = [python_executable or sys.executable, "-m", "unsupervised_seg", "segment", str(input_path),
               "-o", str(output_path), "--format", "seg.nrrd", "--progress", "json",
               "--max-iter", str(params.max_iter), "--device", params.device, "--seed", str(params.seed)]
    if model_in is None:
        command += ["--clusters", str(params.n_clusters)]
    else:
        command += ["--init-model", str(model_in)]
    if params.n_labels:
        command += ["--n-labels", str(params.n_labels)]
    if scribble_path is not None:
        command += ["--scribbles", str(scribble_path)]
    if mask_path is not None:
        command += ["--mask", str(mask_path)]
    if class_names:
        command += ["--class-names", class_names_json(class_names)]
    if model_out is not None:
        command += ["--save-model", str(model_out)]
    return command


@dataclass(frozen=True)
class RunFiles:
    """Where one run keeps its files inside its own temporary folder."""

    folder: Path

    @property
    def input(self) -> Path:
        return Path(self.folder) / "input.nrrd"

    @property
    def scribbles(self) -> Path:
        return Path(self.folder) / "scribbles.nrrd"

    @property
    def mask(self) -> Path:
        return Path(self.folder) / "roi.nrrd"

    @property
    def output(self) -> Path:
        return Path(self.folder) / "result.seg.nrrd"

    @property
    def model(self) -> Path:
        return Path(self.folder) / "model.pt"
