"""Follows an engine run from its output: the ``--progress json`` lines become a progress bar, a
status line with an ETA, the log and, at the end, one message saying what happened. Standard library only."""
from __future__ import annotations

import json
import time
from typing import List, Mapping, Optional, Tuple

# Fractions of the progress bar: fitting fills it up to FIT_END (prediction starts there), the end
# of the run ("done") sets DONE, the written result 1.
FIT_END, DONE = 0.90, 0.97


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
    if stage == "fit":  # the engine's estimate of the share done (iterations and convergence), else iterations
        estimate = event.get("fraction")
        if isinstance(estimate, (int, float)):
            return FIT_END * min(max(float(estimate), 0.0), 1.0)
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
        estimate = event.get("fraction")
        parts = [f"Iteration {iteration}" if isinstance(estimate, (int, float)) or not total
                 else f"Iteration {iteration}/{total}"]
        if event.get("n_labels") is not None:
            parts.append(f"{event['n_labels']} labels")
        if isinstance(event.get("changed"), (int, float)) and isinstance(event.get("tolerance"), (int, float)):
            parts.append(f"{100 * event['changed']:.1f} % of labels changed (stops below {100 * event['tolerance']:.1f} %)")
        elif isinstance(event.get("loss"), (int, float)):
            parts.append(f"loss {event['loss']:.3f}")
        if self._fit_start is None:
            self._fit_start = (now, estimate if isinstance(estimate, (int, float)) else iteration)
        start_time, start = self._fit_start
        if isinstance(estimate, (int, float)) and isinstance(start, (int, float)) and estimate > start:
            left = (now - start_time) * (1.0 - estimate) / (estimate - start)
            parts.append(f"about {_duration(left)} left")
        elif isinstance(iteration, int) and isinstance(total, int) and isinstance(start, int) and iteration > start:
            per_iteration = (now - start_time) / (iteration - start)
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
