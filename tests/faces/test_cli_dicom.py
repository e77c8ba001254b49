"""The command line on DICOM series folders, end to end: DICOM SEG (subprocess, frame by frame) and NIfTI on
the series' grid from the same run, the series' own files never written over, bad series rejected in one line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unsupervised_seg.cli import main
from unsupervised_seg.io.dicom import read_dicom_series

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
ENGINE = ["--max-iter", "5", "--seed", "0", "--device", "cpu"]


def digest(paths):
    """{name: sha256} of ``paths``."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def series(tmp_path_factory, dicom_series):
    """(folder, slice paths in order): 10 shuffled axial 4 mm MNI152 slices, InstanceNumber reversed."""
    folder = tmp_path_factory.mktemp("cli_series") / "T1"
    paths, _, _ = dicom_series.write_mni_series(folder, slab=(22, 32), reversed_instance_numbers=True, seed=6)
    return folder, paths


def test_segment_dicom_folder_to_dicom_seg_and_nifti(series, tmp_path, dicom_series):
    import nibabel as nib

    folder, paths = series
    before = digest(paths)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "unsupervised_seg",
            "segment",
            str(folder),
            "-o",
            str(out / "T1.dcm"),
            "--format",
            "dicom-seg",
            "--progress",
            "json",
            *ENGINE,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["stage"] == "written" and events[-1]["path"] == str(out / "T1.dcm")
    # the same run as NIfTI (same seed, same labels): the label map on the DICOM grid, for the frame-by-frame check
    assert main(["segment", str(folder), "-o", str(out / "T1.nii.gz"), "--progress", "none", *ENGINE]) == 0
    volume = read_dicom_series(folder)
    nifti = nib.load(out / "T1.nii.gz")
    assert nifti.shape == volume.spatial_shape
    np.testing.assert_allclose(nifti.affine, volume.affine, atol=1e-4)
    labels = np.asarray(nifti.dataobj).astype(np.int32)
    dicom_series.check_seg(out / "T1.dcm", volume, labels, {}, "AUTOMATIC")  # references the series, every frame
    assert all(s.SegmentLabel.startswith("Cluster ") for s in pydicom.dcmread(out / "T1.dcm").SegmentSequence)
    assert sorted(p.name for p in out.iterdir()) == ["T1.dcm", "T1.nii.gz"]
    assert digest(paths) == before  # the series is read, never written


def test_a_file_of_the_input_series_is_never_written_over(series, capsys):
    folder, paths = series
    before = digest(paths)
    for extra, problem in [([], "output exists (use --overwrite"), (["--overwrite"], "input DICOM series")]:
        code = main(
            [
                "segment",
                str(folder),
                "-o",
                str(paths[0]),
                "--format",
                "dicom-seg",
                "--progress",
                "none",
                *extra,
                *ENGINE,
            ]
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert len(lines) == 1 and str(paths[0]) in lines[0] and problem in lines[0], lines
    assert digest(paths) == before


def _missing_slice(folder, paths, work, dicom_series):
    shutil.copytree(folder, work)
    (work / paths[4].name).unlink()
    return "1 missing slice(s): gap of 8 mm"


def _two_series(folder, paths, work, dicom_series):
    shutil.copytree(folder, work)
    dicom_series.write_mni_series(work, slab=(22, 26), series_description="FLAIR", seed=7)  # mixed into the folder
    return "the folder holds 2 DICOM series, choose one with --series-uid"


def _corrupt_file(folder, paths, work, dicom_series):
    shutil.copytree(folder, work)
    victim = work / paths[6].name
    victim.write_bytes(victim.read_bytes()[:-500])
    return f"{victim}: cannot read pixel data"


def _no_dicom(folder, paths, work, dicom_series):
    work.mkdir()
    (work / "readme.txt").write_text("no images here")
    return ("no DICOM images found in the folder", "holds no images or DICOM series")  # reader's or CLI's words


def _single_slice(folder, paths, work, dicom_series):
    work.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", work / "CT_small.dcm")
    return "the series has a single slice"


@pytest.mark.parametrize(
    "make", [_missing_slice, _two_series, _corrupt_file, _no_dicom, _single_slice], ids=lambda f: f.__name__.strip("_")
)
def test_bad_series_exit_1_with_one_line_and_no_output(make, series, tmp_path, capsys, dicom_series):
    folder, paths = series
    problem = make(folder, paths, tmp_path / "in", dicom_series)
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [
            "segment",
            str(tmp_path / "in"),
            "-o",
            str(out / "seg.dcm"),
            "--format",
            "dicom-seg",
            "--progress",
            "none",
            *ENGINE,
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    problems = problem if isinstance(problem, tuple) else (problem,)
    assert len(lines) == 1 and any(p in lines[0] for p in problems), lines
    assert str(tmp_path / "in") in lines[0]  # the message names the folder or the file in it
    assert list(out.iterdir()) == []
