"""Where the command line's progress, results and errors go."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from ..core.errors import describe
from ..core.progress import Failed, FitStep, ProgressEvent, Result, Written
from .parser import PROG


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _jsonable(value):
    """JSON fallback for numpy values and paths in events."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class Reporter:
    """A progress callback for the api, and the command line's output.

    mode "bar": a tqdm bar on stderr (when it is a terminal and not in CI) whose fraction is the engine's
    estimate of the run's share done, result lines on stdout; "json": every event as one JSON object per
    line on stdout; "none": result lines only. Errors: one line on stderr each (and a JSON event).
    """

    def __init__(self, mode: str = "bar"):
        self.mode = mode
        self.use_bar = mode == "bar" and sys.stderr.isatty() and not _in_ci()
        self.bar = None
        self.phase: Optional[str] = None
        self.failures = 0

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, Failed):
            self._failed(event)
            return
        if self.mode == "json":
            self._emit(event.to_dict())
        if isinstance(event, FitStep) and self.use_bar:
            self._update_bar(event)
        elif isinstance(event, Written):
            self.close()
            if self.mode != "json":
                print(
                    f"wrote {event.path}"
                    + (
                        f" ({summary_text(event.extra)})"
                        if "n_labels" in event.extra or "images" in event.extra or "frames" in event.extra
                        else ""
                    ),
                    flush=True,
                )
        elif isinstance(event, Result) and self.mode != "json":
            print(event.extra.get("text", ""), flush=True)

    def error(self, exc: BaseException, path=None) -> None:
        """Report an error raised outside the api's per-input handling."""
        where, problem = describe(exc, path)
        self(Failed(where, problem))

    def _failed(self, event: Failed) -> None:
        self.close()
        self.failures += 1
        where = f"{event.path}: " if event.path else ""
        print(f"{PROG}: error: {where}{event.message}", file=sys.stderr, flush=True)
        if self.mode == "json":
            self._emit({**event.to_dict(), "path": event.path})

    @staticmethod
    def _emit(data: dict) -> None:
        print(json.dumps(data, default=_jsonable), flush=True)

    def _update_bar(self, event: FitStep) -> None:
        if self.bar is not None and (self.phase != event.phase or event.iteration == 1):  # a bar per phase run
            self.close()
        if self.bar is None:
            from tqdm import tqdm

            name = Path(str(event.extra.get("input", ""))).name
            self.phase = event.phase
            self.bar = tqdm(
                total=100,
                desc=f"{name} {event.phase}".strip(),
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
            )
        self.bar.n = round(100 * (event.fraction or 0.0), 1)
        changed = "" if event.changed is None else f"{event.changed:.3f}/{event.tolerance}"
        self.bar.set_postfix(it=event.iteration, labels=event.n_labels, changed=changed or None, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary_text(info: dict) -> str:
    """One human line about a written output."""
    if "images" in info:
        images = info["images"]
        return f"trained on {images} image{'s' if images != 1 else ''}, {info['iterations']} iterations"
    if "frames" in info:
        return f"{info['frames']} frames, {info['iterations']} iterations, {info['seconds']:.1f} s"
    return (
        f"{info['n_labels']} labels, {info['iterations']} iterations, stopped: {info['stop_reason']}, "
        f"{info['seconds']:.1f} s on {info['device']}"
    )
