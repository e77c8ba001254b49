"""Shared fixtures: the bundled MNI152 sample (real data) at 2 mm and a 4 mm downsample, and the DICOM
test helpers (tests/helpers/dicom_series.py) as a module.

Layout: tests/core, tests/engine and tests/io test one layer each; tests/faces the command line, the
MONAI bundle and the DICOM pipeline end to end (tests/faces/slicer the Slicer module); tests/demo the
demo and benchmark helpers. Test modules never import each other: shared code lives in tests/helpers
and reaches the tests through fixtures here.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".pytest_tmp"  # ignored by git; left in place (another run may be using it)
_RUN_FOLDER = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Keep what the tests write inside the repository, in one folder per run removed at its end: pytest's
    tmp_path folders (instead of $TMPDIR/pytest-of-<user>; a --basetemp given by hand wins) and matplotlib's
    config and font cache (imported by MONAI and nilearn; instead of ~/.config and ~/.cache), also for the
    subprocesses the tests start. Several runs at once (other checkouts, other developers) each get their own."""
    SCRATCH.mkdir(exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=SCRATCH))
    config.stash[_RUN_FOLDER] = run
    if config.option.basetemp is None:
        config.option.basetemp = str(run / "tmp")
    os.environ.setdefault("MPLCONFIGDIR", str(run / "matplotlib"))
    os.environ["UNSUPERVISED_SEG_TEST_RUN"] = str(run)


def pytest_unconfigure(config):
    run = config.stash.get(_RUN_FOLDER, None)
    if run is not None:
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="session")
def mni_2mm():
    """(Volume (1, 99, 117, 95), brain mask bool, tissue labels 0..3) of the bundled sample."""
    from unsupervised_seg.demo.sample import load_sample

    return load_sample()


@pytest.fixture(scope="session")
def mni_4mm(mni_2mm):
    """The bundled sample at 4 mm: every second voxel (T1), with the mask and labels taken the same way."""
    from unsupervised_seg import Volume

    volume, mask, tissues = mni_2mm
    sub = (slice(None, None, 2),) * 3
    affine = volume.affine.copy()
    affine[:3, :3] *= 2
    small = Volume(
        np.ascontiguousarray(volume.data[(slice(None),) + sub]),
        tuple(s * 2 for s in volume.spacing),
        affine,
        source="MNI152 4 mm (bundled sample)",
    )
    return small, np.ascontiguousarray(mask[sub]), np.ascontiguousarray(tissues[sub])


HELPERS = Path(__file__).resolve().parent / "helpers"


def load_helper(name: str):
    """tests/helpers/<name>.py as a module, loaded by path (whatever pytest's import mode)."""
    spec = importlib.util.spec_from_file_location(f"unsupervised_seg_test_helpers.{name}", HELPERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cli():
    """tests/helpers/cli.py: run(*args, cwd=None, env=None, timeout=900), the command line in a subprocess."""
    return load_helper("cli")


@pytest.fixture(scope="session")
def dicom_series():
    """tests/helpers/dicom_series.py: write_series, mni_axial, write_mni_series, LPS_FROM_RAS, check_seg."""
    pytest.importorskip("pydicom")
    return load_helper("dicom_series")


@pytest.fixture(scope="session")
def chest_ct():
    """(Volume (1, 128, 128, 34) in HU, 3 x 3 x 10 mm, -3024 outside the circular field of view; body mask)
    from 3D Slicer's CTChest sample that slicerio (a dependency) ships. Body: HU > -500, largest component,
    holes filled per slice (the lungs are inside it)."""
    from pathlib import Path

    import slicerio
    from scipy import ndimage as ndi

    from unsupervised_seg import load_volume

    volume = load_volume(Path(slicerio.__file__).parent / "data" / "CTChest4.nrrd")
    hu = volume.data[0]
    parts, _ = ndi.label(hu > -500)
    body = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    body = np.stack([ndi.binary_fill_holes(body[..., z]) for z in range(body.shape[2])], axis=-1)
    return volume, body


@pytest.fixture(scope="session")
def colin_head_4mm():
    """(Volume (1, 45, 54, 45), whole-head Colin27 T1 at 4 mm, no mask; tissue labels 0..3 inside the brain,
    threshold-derived) committed under tests/data (see LICENSE-Colin27.txt there)."""
    from unsupervised_seg import load_volume

    data = Path(__file__).resolve().parent / "data"
    tissues = load_volume(data / "colin27_tissues_4mm.nii.gz").data[0].astype(np.int64)
    return load_volume(data / "colin27_head_4mm.nii.gz"), tissues
