"""What a new user meets on the command line (issue 15), run as a user runs it: ``python -m unsupervised_seg`` in a
subprocess. Reference mode on the bundled sample, output problems reported before any fitting, progress that
ends at 100 %, the label-count and sequence messages, the documented Python version, and nothing written
outside the output folder.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unsupervised_seg.demo.metrics import hungarian_dice
from unsupervised_seg.demo.sample import SAMPLE_MASK, SAMPLE_T1, SAMPLE_TISSUES

ROOT = Path(__file__).resolve().parents[2]
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self").is_dir(), reason="needs Linux /proc (a folder no one can write)")


def json_events(proc):
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("unsupervised-seg: error:")]


def assert_one_error_before_any_fit(proc, named):
    """Exit 1, one error line naming ``named``, no traceback, and no optimisation step was taken."""
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and str(named) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and ".tmp." not in lines[0], proc.stderr  # never a temporary name
    assert not [e for e in json_events(proc) if e["stage"] in ("fit", "done", "written")]
    return lines[0]


def write_nifti(path, array, affine):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


@pytest.fixture(scope="module")
def crop(tmp_path_factory, mni_4mm):
    """The brain's centre of the 4 mm sample (32 x 36 x 32 voxels, no mask) as crop.nii.gz: a run converges in seconds."""
    volume, _, _ = mni_4mm
    box = (slice(9, 41), slice(12, 48), slice(10, 42))
    affine = volume.affine.copy()
    affine[:3, 3] = (affine @ np.r_[9, 12, 10, 1.0])[:3]
    return write_nifti(tmp_path_factory.mktemp("crop") / "crop.nii.gz", volume.data[0][box] * 100, affine)


# ------------------------------------------------------------------------------------------ 1. reference mode
@pytest.mark.slow
def test_segment_with_a_model_trained_on_the_sample_is_as_good_as_a_plain_fit(cli, tmp_path):
    """``train SAMPLE --mask MASK -o m.pt`` then ``segment --model m.pt``: >= 0.88 one-to-one Dice (a plain fit:
    0.895; before coarse to fine and BatchNorm calibration reference mode gave 0.863 in 20x the time)."""
    model = tmp_path / "m.pt"
    trained = cli.run("train", SAMPLE_T1, "--mask", SAMPLE_MASK, "-o", model)
    assert trained.returncode == 0, trained.stderr
    assert f"wrote {model} (trained on 1 image, " in trained.stdout
    out = tmp_path / "ref.nii.gz"
    applied = cli.run("segment", SAMPLE_T1, "--mask", SAMPLE_MASK, "--model", model, "-o", out, "--progress", "json")
    assert applied.returncode == 0, applied.stderr
    written = json_events(applied)[-1]
    assert written["stage"] == "written" and written["stop_reason"] == "predict" and written["iterations"] == 0
    labels = np.asarray(nib.load(str(out)).dataobj)
    mask = np.asarray(nib.load(str(SAMPLE_MASK)).dataobj) > 0
    tissues = np.asarray(nib.load(str(SAMPLE_TISSUES)).dataobj)
    dice = hungarian_dice(labels, tissues, mask)
    assert dice["mean"] >= 0.88, dice


# ------------------------------------------------------------------------ 2. output problems before the fit
@needs_proc
def test_train_into_an_unwritable_folder_fails_at_once_naming_the_model_file(cli):
    proc = cli.run("train", SAMPLE_T1, "-o", "/proc/m.pt", "--max-iter", "2", "--progress", "json")
    line = assert_one_error_before_any_fit(proc, "/proc/m.pt")  # was: a RuntimeError traceback after training
    assert "not writable" in line


def test_a_3d_volume_to_png_fails_before_the_fit_naming_the_output(cli, tmp_path):
    proc = cli.run("segment", SAMPLE_T1, "-o", "t1.png", "--progress", "json", cwd=tmp_path)
    line = assert_one_error_before_any_fit(proc, "t1.png")  # was: after the fit, naming .t1.<hex>.tmp.png
    assert "PNG holds 2D label maps" in line
    assert list(tmp_path.iterdir()) == []  # no temporary or probe file left


@needs_proc
def test_an_unwritable_output_is_named_not_the_input(cli):
    proc = cli.run("segment", SAMPLE_T1, "-o", "/proc/g.nii.gz", "--progress", "json")
    line = assert_one_error_before_any_fit(proc, "/proc/g.nii.gz")
    assert str(SAMPLE_T1) not in line


def test_a_read_only_output_folder_fails_before_the_fit(cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").write_text("")
        except PermissionError:
            pass
        else:  # root writes into read-only folders: the check cannot fail here (/proc covers root above)
            pytest.skip("this user can write into a read-only folder (root)")
        proc = cli.run("segment", SAMPLE_T1, "-o", locked / "x.nii.gz", "--progress", "json")
        line = assert_one_error_before_any_fit(proc, locked / "x.nii.gz")
        assert "not writable" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------------- 6. progress to 100 %
def test_json_progress_fraction_never_decreases_and_reaches_1_when_each_phase_converges(cli, crop, tmp_path):
    # --min-labels 1: the run ends by convergence, not by falling to the minimum label count
    proc = cli.run("segment", crop, "-o", tmp_path / "labels.nii.gz", "--min-labels", "1", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    events = json_events(proc)
    fits = [e for e in events if e["stage"] == "fit"]
    done = next(e for e in events if e["stage"] == "done")
    # the network, then (3D, no strokes) its clustering head until a label shrank: one progress bar each
    assert [e["phase"] for e in fits] == sorted((e["phase"] for e in fits), reverse=True)
    assert {e["phase"] for e in fits} == {"network", "head"}
    assert done["stop_reason"] in ("converged", "shrank") and len(fits) < fits[0]["max_iter"], done
    for phase in ("network", "head"):
        fractions = [e["fraction"] for e in fits if e["phase"] == phase]
        assert all(0 <= f <= 1 for f in fractions)
        assert all(b >= a for a, b in zip(fractions, fractions[1:])), (phase, fractions)
        assert fractions[-1] == 1.0 and fractions[-2] < 1.0  # 100 % exactly when it ends, not before
    assert {e["tolerance"] for e in fits} == {0.005}
    assert any(e.get("changed") is not None for e in fits)  # the convergence measure is reported
    last_fit = max(i for i, e in enumerate(events) if e["stage"] == "fit")
    assert events[last_fit + 1]["stage"] == "done" and events[-1]["stage"] == "written"


# ------------------------------------------------------------------------------------- 9. smaller messages
def test_n_labels_0_names_the_real_bound(cli, crop, tmp_path):
    proc = cli.run("segment", crop, "-o", tmp_path / "x.nii.gz", "--n-labels", "0")
    assert proc.returncode == 1 and error_lines(proc) == ["unsupervised-seg: error: n_labels must be >= 1, got 0"]


def test_a_constant_frame_in_a_sequence_is_named_by_its_frame_before_any_fit(cli, crop, tmp_path):
    image = nib.load(str(crop))
    small = np.asarray(image.dataobj)[8:24, 10:26, 8:24].astype(np.float32)
    series = np.stack([small, np.full_like(small, 7.0), small], axis=-1)
    path = write_nifti(tmp_path / "series.nii.gz", series, image.affine)
    proc = cli.run("segment", "--sequence", path, "-o", tmp_path / "out.nii.gz", "--progress", "json")
    line = assert_one_error_before_any_fit(proc, path)
    assert "frame 1 (counted from 0): channel 0 is constant" in line, line


# ---------------------------------------------------------------------------------- 7. the Python version
def test_readme_and_pyproject_say_python_3_10():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.findall(r'^requires-python\s*=\s*"([^"]*)"', pyproject, re.M) == [">=3.10"]
    docs = {
        name: (ROOT / name).read_text()
        for name in ("README.md", "CONTRIBUTING.md", "Makefile")
        if (ROOT / name).exists()
    }
    stated = {name: re.findall(r"Python\s*(?:≥|>=)\s*(3\.\d+)", text) for name, text in docs.items()}
    assert stated["README.md"], "README must say which Python it needs"
    assert {version for found in stated.values() for version in found} == {"3.10"}, stated


# --------------------------------------------------------------------------- 8. nothing written elsewhere
def test_the_demo_writes_nothing_outside_its_output_folder(tmp_path):
    """Fresh, empty $TMPDIR and $HOME stay empty: torch's inductor cache folder (created when the first
    optimiser imports torch._dynamo) and matplotlib's caches (MONAI imports matplotlib) are not left there."""
    tmpdir, home, out = tmp_path / "tmp", tmp_path / "home", tmp_path / "demo"
    tmpdir.mkdir()
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    }
    env.update(TMPDIR=str(tmpdir), HOME=str(home))
    proc = subprocess.run(
        [sys.executable, "-m", "unsupervised_seg", "demo", "-o", str(out), "--max-iter", "1"],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "2", "CI": "true"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "demo",
        "demo/mni152_t1_2mm_labels.nii.gz",
        "demo/mni152_t1_2mm_overlay.png",
        "home",
        "tmp",
    ]


def test_tests_keep_their_files_in_the_repository(tmp_path, pytestconfig):
    """pytest's folders and matplotlib's caches of a test run are under the repository, in the run's folder
    (tests/conftest.py), unless --basetemp or MPLCONFIGDIR were given by hand."""
    run = Path(os.environ["UNSUPERVISED_SEG_TEST_RUN"])
    assert ROOT / ".pytest_tmp" in run.parents
    if pytestconfig.option.basetemp == str(run / "tmp"):
        assert run in tmp_path.parents
    if os.environ["MPLCONFIGDIR"].startswith(str(run)):
        import matplotlib

        assert run in Path(matplotlib.get_cachedir()).parents and run in Path(matplotlib.get_configdir()).parents
