"""The Slicer face's tests: UnsupervisedSegLib without Slicer, and the module on real MRML (slicer-core).

``UnsupervisedSeg/`` goes on ``sys.path`` as Slicer puts it there, so ``import UnsupervisedSegLib``
works as in the application. The ``slicer_app`` fixture boots the harness (slicer_harness.py) once per
session; it skips its tests, saying why, only when slicer-core cannot be imported.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODULE_DIR = ROOT / "UnsupervisedSeg"
MODULE_FILE = MODULE_DIR / "UnsupervisedSeg.py"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

_status = {"error": None, "booted": False, "version": None}


def _harness():
    """slicer_harness.py, loaded by path (whatever pytest's import mode)."""
    name = "unsupervised_seg_slicer_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, str(HERE / "slicer_harness.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def slicer_app():
    """A booted harness (``.scene``, ``.module``: UnsupervisedSeg.py, ``.temporaryPath``, ...)."""
    try:
        import slicer  # noqa: F401
    except ImportError as error:
        _status["error"] = f"{error.__class__.__name__}: {error}"
        pytest.skip(
            f"slicer-core cannot be imported ({_status['error']}); install slicer-core==5.13.31053.0 "
            "(CPython 3.10-3.13, Linux x86_64) to run the module on real MRML"
        )
    if not hasattr(slicer, "vtkMRMLScene"):  # e.g. PyPI's unrelated package named "slicer"
        _status["error"] = f"`import slicer` found {getattr(slicer, '__file__', slicer)}, not slicer-core"
        pytest.skip(f"slicer-core cannot be imported ({_status['error']})")
    from importlib import metadata

    try:
        _status["version"] = metadata.version("slicer-core")
    except metadata.PackageNotFoundError:
        _status["version"] = "unknown version"
    harness = _harness().boot(MODULE_FILE)
    _status["booted"] = True
    yield harness
    harness.shutdown()


@pytest.fixture
def scene(slicer_app):
    """The harness's scene, cleared before the test (as the module's self-test does in setUp)."""
    slicer_app.scene.Clear()
    yield slicer_app.scene
    slicer_app.scene.Clear()


@pytest.fixture
def logic(slicer_app, scene):
    """A new UnsupervisedSegLogic; at the end its run is cancelled and its saved network removed."""
    instance = slicer_app.module.UnsupervisedSegLogic()
    yield instance
    instance.cancel()
    instance.forgetModel()


def pytest_terminal_summary(terminalreporter):
    """Say in every run's output (also with -q) whether the module ran on real Slicer libraries."""
    if _status["booted"]:
        terminalreporter.write_line(f"Slicer module tests ran on real MRML from slicer-core {_status['version']}.")
    elif _status["error"]:
        terminalreporter.write_line(
            f"Slicer module tests on real MRML were SKIPPED: slicer-core cannot be imported ({_status['error']})."
        )
