"""The command line on a DICOM series folder: NIfTI and DICOM SEG out, source files protected."""
import hashlib

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_fixtures import write_mni_series
from unsupervised_seg.cli import main
from unsupervised_seg.io import load_volume

pytest.importorskip("highdicom")


@pytest.fixture()
def series(tmp_path):
    """An axial MR series (8 mm voxels) of the bundled MNI152 sample in tmp_path/series."""
    folder = tmp_path / "series"
    folder.mkdir()
    paths, _, _ = write_mni_series(folder, step=4)
    return folder, paths


def test_dicom_folder_to_nifti_on_the_series_geometry(series, tmp_path, capsys):
    folder, _ = series
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), "--max-iter", "3", "--progress", "none"]) == 0
    volume = load_volume(folder)
    written = nib.load(out)
    assert written.shape == volume.spatial_shape and np.allclose(written.affine, volume.affine)


def test_dicom_folder_to_dicom_seg_referencing_the_series(series, tmp_path, capsys):
    folder, paths = series
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    out = tmp_path / "seg.dcm"
    assert main(["segment", str(folder), "-o", str(out), "--max-iter", "3", "--progress", "none"]) == 0
    seg = pydicom.dcmread(out)
    source = pydicom.dcmread(paths[0])
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert all(s.SegmentLabel.startswith("Cluster ") for s in seg.SegmentSequence)
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    # a source file of the series is never written over, even with --overwrite
    assert main(["segment", str(folder), "-o", str(paths[0]), "--format", "dicom-seg", "--overwrite",
                 "--max-iter", "2"]) == 1
    assert "input DICOM series" in capsys.readouterr().err
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
