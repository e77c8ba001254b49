"""The command line on DICOM folders: DICOM SEG out (subprocess), NIfTI on the same grid, bad series rejected."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_fixtures import write_mni_series
from test_dicom_seg import check_seg
from unsupervised_seg.cli import main
from unsupervised_seg.io.dicom import read_dicom_series

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
ENGINE = ["--max-iter", "5", "--seed", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """(folder, slice paths in order): 10 shuffled axial 4 mm MNI152 slices."""
    folder = tmp_path_factory.mktemp("cli_series") / "T1"
    paths, _, _ = write_mni_series(folder, slab=(22, 32), reversed_instance_numbers=True, seed=6)
    return folder, paths


def test_segment_dicom_folder_to_dicom_seg_and_nifti(series, tmp_path, capsys):
    import nibabel as nib

    folder, _ = series
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "unsupervised_seg", "segment", str(folder), "-o", str(out / "T1.dcm"),
                          "--format", "dicom-seg", "--progress", "json", *ENGINE], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["stage"] == "written" and events[-1]["path"] == str(out / "T1.dcm")
    # the same run as NIfTI (same seed, same labels): the label map on the DICOM grid, for the frame-by-frame check
    assert main(["segment", str(folder), "-o", str(out / "T1.nii.gz"), "--progress", "none", *ENGINE]) == 0
    volume = read_dicom_series(folder)
    nifti = nib.load(out / "T1.nii.gz")
    np.testing.assert_allclose(nifti.affine, volume.affine, atol=1e-4)
    labels = np.asarray(nifti.dataobj).astype(np.int32)
    check_seg(out / "T1.dcm", volume, labels, {}, "AUTOMATIC")
    assert sorted(p.name for p in out.iterdir()) == ["T1.dcm", "T1.nii.gz"]


def _missing_slice(folder, paths, work):
    shutil.copytree(folder, work)
    (work / paths[4].name).unlink()
    return "1 missing slice(s): gap of 8 mm"


def _two_series(folder, paths, work):
    shutil.copytree(folder, work)
    write_mni_series(work, slab=(22, 26), series_description="FLAIR", seed=7)  # mixed into the same folder
    return "the folder holds 2 DICOM series, choose one with --series-uid"


def _corrupt_file(folder, paths, work):
    shutil.copytree(folder, work)
    victim = work / paths[6].name
    victim.write_bytes(victim.read_bytes()[:-500])
    return f"{victim}: cannot read pixel data"


def _no_dicom(folder, paths, work):
    work.mkdir()
    (work / "readme.txt").write_text("no images here")
    return ("no DICOM images found in the folder", "holds no images or DICOM series")  # reader's or CLI's words


def _single_slice(folder, paths, work):
    work.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", work / "CT_small.dcm")
    return "the series has a single slice"


@pytest.mark.parametrize("make", [_missing_slice, _two_series, _corrupt_file, _no_dicom, _single_slice],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_series_exit_1_with_one_line_and_no_output(make, series, tmp_path, capsys):
    folder, paths = series
    problem = make(folder, paths, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", str(tmp_path / "in"), "-o", str(out / "seg.dcm"), "--format", "dicom-seg",
                 "--progress", "none", *ENGINE])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    problems = problem if isinstance(problem, tuple) else (problem,)
    assert len(lines) == 1 and any(p in lines[0] for p in problems), lines
    assert list(out.iterdir()) == []
