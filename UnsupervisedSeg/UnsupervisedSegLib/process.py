"""The engine's background process inside Slicer: output read on a thread, handed to the GUI by a
QTimer (Slicer stays responsive), Cancel kills the whole process tree.

The only part of UnsupervisedSegLib that needs Slicer (``slicer.util.launchConsoleProcess``,
``slicer.app``) and Qt (``qt.QTimer``); the module imports it, nothing else does.
"""
import queue
import threading

import qt
import slicer


class BackgroundRun:
    """One engine process started with ``slicer.util.launchConsoleProcess`` (stdout and stderr merged)."""

    POLL_INTERVAL_MS = 200

    def __init__(self, command, environment):
        self.command = command
        self.cancelled = False
        self._lines = queue.Queue()
        self._timer = None
        self.process = slicer.util.launchConsoleProcess(command, updateEnvironment=environment)

    def _outputLines(self):
        """The process's output lines until it closes them (undecodable lines are skipped)."""
        while True:
            try:
                line = self.process.stdout.readline()
            except UnicodeDecodeError:
                continue
            if not line:
                return
            yield line

    def _read(self) -> None:
        for line in self._outputLines():
            self._lines.put(line)
        self.process.wait()
        self.process.stdout.close()
        self._lines.put(None)

    def start(self, onLines, onFinished) -> None:
        """Return at once; call onLines(list of lines) as output arrives and
        onFinished(returncode, cancelled) when the process has ended (both on the GUI thread)."""
        self._onLines, self._onFinished = onLines, onFinished
        threading.Thread(target=self._read, daemon=True).start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        lines, finished = [], False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                finished = True
                break
            lines.append(line)
        if lines:
            self._onLines(lines)
        if finished:
            self._timer.stop()
            self._onFinished(self.process.returncode, self.cancelled)

    def wait(self, onLines) -> int:
        """Block until the process ends (the GUI still repaints); returns its exit code."""
        for line in self._outputLines():
            onLines([line])
            slicer.app.processEvents()
        returncode = self.process.wait()
        self.process.stdout.close()
        return returncode

    def kill(self) -> None:
        """Stop the engine: the launcher and every process it started."""
        self.cancelled = True
        try:
            import psutil
        except ImportError:
            self.process.kill()
            return
        try:
            parent = psutil.Process(self.process.pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
        except psutil.NoSuchProcess:
            pass
