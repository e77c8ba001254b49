"""Stand-in for the ``qt`` module (PythonQt) of the 3D Slicer application, written for this project's tests.

slicer-core has no Qt. The module's logic and ``slicer.util`` use only what is here: timers (the
background run polls its output with a QTimer) and the few classes ``slicer.util.tempDirectory`` needs.
Timers fire when ``slicer.app.processEvents()`` (see the harness) runs due timers, as a Qt event loop would.
Anything else is a widget: only the application has it.
"""

import datetime
import os
import time


class Qt:
    Unchecked, PartiallyChecked, Checked = 0, 1, 2
    WaitCursor = 3


class _EventLoop:
    """The timers that are running; ``process()`` fires those that are due."""

    def __init__(self):
        self.timers = []

    def process(self):
        now = time.monotonic()
        for timer in [t for t in self.timers if t._due <= now]:
            if timer in self.timers:
                timer._fire()


eventLoop = _EventLoop()


class QTimer:
    def __init__(self, parent=None):
        self._interval, self._singleShot, self._slots, self._due = 0, False, [], 0.0

    def setInterval(self, msec):
        self._interval = int(msec)

    @property
    def interval(self):
        return self._interval

    def setSingleShot(self, singleShot):
        self._singleShot = bool(singleShot)

    def connect(self, signal, slot):
        if signal != "timeout()":
            raise NotImplementedError(f"QTimer stand-in: no signal {signal}")
        self._slots.append(slot)

    def start(self, msec=None):
        if msec is not None:
            self._interval = int(msec)
        self._due = time.monotonic() + self._interval / 1000
        if self not in eventLoop.timers:
            eventLoop.timers.append(self)

    def stop(self):
        if self in eventLoop.timers:
            eventLoop.timers.remove(self)

    def isActive(self):
        return self in eventLoop.timers

    def _fire(self):
        if self._singleShot:
            self.stop()
        else:
            self._due = time.monotonic() + self._interval / 1000
        for slot in list(self._slots):
            slot()

    @staticmethod
    def singleShot(msec, slot):
        timer = QTimer()
        timer.setSingleShot(True)
        timer.connect("timeout()", slot)
        timer.start(msec)


class QDateTime:
    def __init__(self, value=None):
        self._value = value or datetime.datetime.now()

    @staticmethod
    def currentDateTime():
        return QDateTime()

    def toString(self, fmt):
        v = self._value
        for token, text in (
            ("yyyy", f"{v.year:04d}"),
            ("MM", f"{v.month:02d}"),
            ("dd", f"{v.day:02d}"),
            ("hh", f"{v.hour:02d}"),
            ("mm", f"{v.minute:02d}"),
            ("ss", f"{v.second:02d}"),
            ("zzz", f"{v.microsecond // 1000:03d}"),
        ):
            fmt = fmt.replace(token, text)
        return fmt


class QLocale:
    English, UnitedStates = 31, 225

    def __init__(self, language=None, country=None):
        pass

    def toString(self, value, fmt):
        return value.toString(fmt)


class QDir:
    """A folder. ``QDir()`` has none: it only makes absolute paths (the current folder is never used)."""

    def __init__(self, path=""):
        if isinstance(path, QDir):
            path = path.absolutePath()
        self._path = os.path.abspath(str(path)) if str(path) else None

    def absolutePath(self):
        if self._path is None:
            raise NotImplementedError("QDir stand-in: QDir() has no folder")
        return self._path

    def mkpath(self, path):
        if not os.path.isabs(str(path)):
            path = os.path.join(self.absolutePath(), str(path))
        os.makedirs(str(path), exist_ok=True)
        return True


class QFileInfo:
    def __init__(self, directory, name=None):
        base = directory.absolutePath() if isinstance(directory, QDir) else str(directory)
        self._path = os.path.abspath(os.path.join(base, name) if name is not None else base)

    def absoluteFilePath(self):
        return self._path


class QProcessEnvironment:
    """What ``slicer.app.startupEnvironment()`` returns: here, this process's environment."""

    def __init__(self, values=None):
        self._values = dict(os.environ if values is None else values)

    def keys(self):
        return list(self._values)

    def value(self, key, default=""):
        return self._values.get(key, default)


def __getattr__(name):
    raise AttributeError(
        f"qt.{name} is not in the project's Qt stand-in: widgets exist only in the Slicer "
        "application (tests/faces/slicer/standins/qt.py)"
    )
