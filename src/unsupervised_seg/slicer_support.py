"""Everything the 3D Slicer module (UnsupervisedSeg/UnsupervisedSeg.py) computes that is not a Slicer call.

The module stays a thin layer of Slicer calls; this file builds the engine command line, parses its
``--progress json`` output, names and colours the result's segments, tidies the scribble label map
and decides what to pip-install into Slicer's Python. It is tested in CI, where Slicer cannot run.

Only the standard library is imported at module level (numpy and the engine lazily, inside the
functions that need them): the Slicer module loads this file by path right after installing the
engine with ``--no-deps``, before the engine's own dependencies are there.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

ENGINE_DISTRIBUTION = "unsupervised-seg"
MINIMUM_TORCH_VERSION = "2.0"
# Packages Slicer's Python already has and that pip must never replace there (SimpleITK and numpy
# are Slicer's own builds; torch comes from the PyTorch extension, matched to the GPU driver).
SLICER_OWNED_PACKAGES = ("numpy", "simpleitk", "torch")
DEVICES = ("auto", "cpu", "cuda")
# Environment of the engine process: unbuffered UTF-8 output, so progress lines arrive as they are printed.
ENGINE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}

# Fractions of the progress bar: fitting fills it up to FIT_END (prediction starts there), the end
# of the run ("done") sets DONE, the written result 1.
FIT_END, DONE = 0.90, 0.97


# --------------------------------------------------------------------------------------------
# Installing the engine into Slicer's Python
# --------------------------------------------------------------------------------------------

def normalise_package_name(name: str) -> str:
    """PEP 503 normalised project name: lower case, runs of ``-_.`` -> ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")


def requirements_to_install(requires: Iterable[str], keep: Sequence[str] = SLICER_OWNED_PACKAGES
                            ) -> Tuple[List[str], List[str]]:
    """Split the engine's ``Requires-Dist`` lines into (to install, left to Slicer).

    ``requires`` is what ``importlib.metadata.requires("unsupervised-seg")`` returns, e.g.
    ``["torch>=2.0,<3", "numpy>=1.23", 'pydicom>=2.4; extra == "dicom"']``. Requirements that only
    apply to an extra are dropped (the module needs none); those naming a package in ``keep`` are
    returned second, untouched. The first list holds one pip argument per requirement, e.g.
    ``"monai>=1.3"`` or ``'tomli>=1; python_version < "3.11"'``.
    """
    keep_names = {normalise_package_name(k) for k in keep}
    install, kept = [], []
    for line in requires or []:
        match = _REQUIREMENT.match(line)
        if not match:
            raise ValueError(f"cannot parse requirement {line!r}")
        name, extras, spec, marker = match.groups()
        if marker and "extra" in marker:
            continue
        requirement = name + (extras or "") + re.sub(r"\s+", "", spec or "").strip("()")
        if marker:
            requirement += f"; {marker.strip()}"  # pip evaluates environment markers itself
        (kept if normalise_package_name(name) in keep_names else install).append(requirement)
    return install, kept


def pin_constraints(installed: Mapping[str, Optional[str]]) -> str:
    """Text of a pip constraints file that pins every installed package of ``installed``
    ({name: version or None}) to its version, so that installing the engine's dependencies can
    never replace Slicer's numpy, SimpleITK or torch (pip fails clearly instead)."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()) if version)


def installed_versions(names: Sequence[str] = SLICER_OWNED_PACKAGES) -> Dict[str, Optional[str]]:
    """{name: installed version or None} from the running interpreter's package metadata."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_tuple(version: str) -> Tuple[int, ...]:
    """(2, 1, 0) for "2.1.0+cu118": the leading numeric release fields of a version string."""
    fields = []
    for part in re.split(r"[.+-]", version):
        if not part.isdigit():
            break
        fields.append(int(part))
    return tuple(fields)


def version_at_least(version: Optional[str], minimum: str) -> bool:
    """True when ``version`` (None: not installed) is at least ``minimum``."""
    if not version:
        return False
    have, need = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


# --------------------------------------------------------------------------------------------
# Parameters and the command line
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunParameters:
    """The module's parameters as the engine command line takes them.

    n_labels: exact number of output labels, 0 = let the run decide (stops at ``min_labels``).
    max_iter: iterations of a full run; refine_iter: iterations of a warm-started "Refine".
    n_clusters: q, the network's number of clusters ("detail": more is finer and slower).
    """

    n_labels: int = 0
    max_iter: int = 200
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
    import sys

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
        return self.folder / "input.nrrd"

    @property
    def scribbles(self) -> Path:
        return self.folder / "scribbles.nrrd"

    @property
    def mask(self) -> Path:
        return self.folder / "roi.nrrd"

    @property
    def output(self) -> Path:
        return self.folder / "result.seg.nrrd"

    @property
    def model(self) -> Path:
        return self.folder / "model.pt"


def stack_channels(arrays: Sequence):
    """One (K, J, I, C) float32 array from C volumes' (K, J, I) arrays on one grid: the input
    volume first, then the extra channels (written as one vector NRRD, read back as channels)."""
    import numpy as np

    arrays = [np.asarray(a) for a in arrays]
    shapes = {a.shape for a in arrays}
    if not arrays or len(shapes) != 1 or arrays[0].ndim != 3:
        raise ValueError(f"channels must be 3D arrays of one shape, got {[a.shape for a in arrays]}")
    return np.stack(arrays, axis=-1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Progress: the engine's ``--progress json`` lines
# --------------------------------------------------------------------------------------------

def parse_progress_line(line) -> Optional[dict]:
    """The progress event on one output line, or None for anything that is not one
    (log text, warnings, blank lines, JSON that is not an object with a "stage")."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    text = (line or "").strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("stage"), str):
        return None
    return event


def _ratio(done, total) -> Optional[float]:
    try:
        done, total = float(done), float(total)
    except (TypeError, ValueError):
        return None
    if total <= 0:
        return None
    return min(max(done / total, 0.0), 1.0)


def progress_fraction(event: Mapping) -> Optional[float]:
    """Where the progress bar stands (0..1) after ``event``; None for events that do not move it
    (an error, an unknown stage)."""
    stage = event.get("stage")
    if stage == "fit":
        ratio = _ratio(event.get("iteration"), event.get("max_iter"))
        return FIT_END * (ratio or 0.0)
    if stage == "predict":
        return FIT_END
    if stage == "done":
        return DONE
    if stage == "written":
        return 1.0
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunMonitor:
    """Follows one engine run from its output lines: progress bar, status line with an ETA,
    the log, and at the end one message saying what happened.

    The module feeds it every line the background process prints (stdout and stderr merged),
    in order; the tests feed it the lines of a real run.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.start = clock()
        self.fraction = 0.0
        self.status = "Starting the engine..."
        self.log: List[str] = []
        self.events: List[dict] = []
        self.written: Optional[str] = None
        self.error: Optional[dict] = None
        self.done: Optional[dict] = None
        self._fit_start: Optional[Tuple[float, int]] = None  # (time, iteration) of the first fit event

    def feed(self, line) -> Optional[dict]:
        """Take one output line; returns its progress event, or None for a log line."""
        event = parse_progress_line(line)
        if event is None:
            text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)).rstrip()
            if text:
                self.log.append(text)
            return None
        self.events.append(event)
        stage = event["stage"]
        fraction = progress_fraction(event)
        if fraction is not None:
            self.fraction = max(self.fraction, fraction)
        if stage == "fit":
            self.status = self._fit_status(event)
        elif stage == "predict":
            self.status = "Labelling the volume..."
        elif stage == "done":
            self.done = event
            self.status = self._done_status(event)
        elif stage == "written":
            self.written = event.get("path")
            if event.get("n_labels") is not None:
                self.status = self._done_status(event)
        elif stage == "error":
            self.error = event
            self.status = "Failed: " + self._error_text(event)
        return event

    def _fit_status(self, event: Mapping) -> str:
        now, iteration, total = self._clock(), event.get("iteration"), event.get("max_iter")
        parts = [f"Iteration {iteration}/{total}" if total else f"Iteration {iteration}"]
        if event.get("n_labels") is not None:
            parts.append(f"{event['n_labels']} labels")
        if isinstance(event.get("loss"), (int, float)):
            parts.append(f"loss {event['loss']:.3f}")
        if isinstance(iteration, int):
            if self._fit_start is None:
                self._fit_start = (now, iteration)
            start_time, start_iteration = self._fit_start
            if isinstance(total, int) and iteration > start_iteration:
                per_iteration = (now - start_time) / (iteration - start_iteration)
                parts.append(f"at most {_duration(per_iteration * (total - iteration))} left")
        return ", ".join(parts)

    def _done_status(self, event: Mapping) -> str:
        """"K labels after N iterations (why it stopped), time[ on device]" from a "done" event
        or the summary a "written" event carries."""
        reasons = {"min_labels": "reached the minimum number of labels", "converged": "converged",
                   "max_iter": "used all iterations", "predict": "predicted with the saved model"}
        reason = reasons.get(event.get("stop_reason"), event.get("stop_reason") or "finished")
        iterations = event.get("iterations", event.get("iteration", "?"))
        seconds = event.get("seconds")
        elapsed = _duration(seconds if isinstance(seconds, (int, float)) else self._clock() - self.start)
        device = f" on {event['device']}" if event.get("device") else ""
        return f"{event.get('n_labels', '?')} labels after {iterations} iterations ({reason}), {elapsed}{device}"

    @staticmethod
    def _error_text(event: Mapping) -> str:
        message = str(event.get("message") or "unknown error")
        path = event.get("path")
        return f"{path}: {message}" if path and str(path) not in message else message

    def outcome(self, returncode: Optional[int]) -> Tuple[bool, str]:
        """(success, one-line message) once the process has ended with ``returncode``.

        Success needs exit code 0 and a "written" event. A failure names the engine's own error
        event when there is one, else the last log line (e.g. a Python traceback's last line).
        """
        if returncode == 0 and self.written and self.error is None:
            return True, self.status if self.done else "Segmentation written"
        if self.error is not None:
            return False, self._error_text(self.error)
        last = next((line.strip() for line in reversed(self.log) if line.strip()), "")
        if returncode == 0:
            return False, "The engine finished without writing a result" + (f": {last}" if last else "")
        return False, f"The engine failed (exit code {returncode})" + (f": {last}" if last else "")


# --------------------------------------------------------------------------------------------
# Segments: scribble classes in, named and coloured result segments out
# --------------------------------------------------------------------------------------------

def scribble_classes(segments: Sequence[Tuple[str, Sequence[float]]]
                     ) -> Tuple[Dict[int, str], Dict[int, tuple]]:
    """Class tables from the scribble segments, in the order they are exported to the label map.

    ``segments`` is [(name, (r, g, b) 0..1), ...]; segment i becomes class i + 1 (the label value
    ``ExportSegmentsToLabelmapNode`` gives the i-th segment ID it is passed).
    Returns (class_names {k: name}, class_colors {k: (r, g, b)}).
    """
    names, colors = {}, {}
    for index, (name, color) in enumerate(segments, start=1):
        names[index] = str(name)
        colors[index] = tuple(float(c) for c in tuple(color)[:3])
    return names, colors


def compact_scribbles(labels, class_names: Mapping[int, str], class_colors: Mapping[int, tuple]):
    """Drop scribble classes whose segment is empty and renumber the rest 1..K in order.

    ``labels``: (*spatial) integer label map (0 = unlabelled). A segment the user created but did
    not paint would otherwise become a class with no voxel. Returns (labels, class_names,
    class_colors), renumbered; raises ValueError if no class has any voxel.
    """
    import numpy as np

    labels = np.asarray(labels)
    present = [k for k in sorted(class_names) if np.any(labels == k)]
    if not present:
        raise ValueError("the scribble segments are empty: paint at least one segment")
    lookup = np.zeros(max(int(labels.max()), max(class_names)) + 1, dtype=np.int32)
    for new, old in enumerate(present, start=1):
        lookup[old] = new
    compacted = lookup[np.clip(labels, 0, None).astype(np.int64)].astype(np.int16)
    names = {new: class_names[old] for new, old in enumerate(present, start=1)}
    colors = {new: class_colors[old] for new, old in enumerate(present, start=1) if old in class_colors}
    return compacted, names, colors


def result_segments(label_values: Iterable[int], class_names: Optional[Mapping[int, str]] = None,
                    class_colors: Optional[Mapping[int, tuple]] = None) -> List[dict]:
    """The segments the module shows for a result: [{"value", "name", "color"}] per label present.

    Label k of a scribble class k keeps the scribble segment's name and colour; every other
    cluster is "Cluster k" in the shared palette (``unsupervised_seg.segments.segment_table``).
    """
    from unsupervised_seg.segments import segment_table

    return segment_table(list(label_values), dict(class_names or {}), dict(class_colors or {}))


def same_grid(shape_a: Sequence[int], ijk_to_ras_a, shape_b: Sequence[int], ijk_to_ras_b,
              tolerance: float = 1e-3) -> bool:
    """Whether two volumes share a voxel grid: same shape and IJK-to-RAS matrices (4x4) equal
    within ``tolerance`` mm. Extra channels must share the input volume's grid."""
    import numpy as np

    if tuple(int(s) for s in shape_a) != tuple(int(s) for s in shape_b):
        return False
    return bool(np.allclose(np.asarray(ijk_to_ras_a, float), np.asarray(ijk_to_ras_b, float), atol=tolerance))
