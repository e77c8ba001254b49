"""DICOM SEG writer: round trip through highdicom and pydicom, engine output, dciodvfy, bad input."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from unsupervised_seg import InputError, SegmentationConfig, Volume, segment
from unsupervised_seg.io.dicom import read_dicom_series
from unsupervised_seg.io.dicom_seg import write_dicom_seg

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


@pytest.fixture(scope="module")
def slab(tmp_path_factory, dicom_series):
    """(folder, Volume) of 12 shuffled axial 4 mm MNI152 slices through the ventricles, InstanceNumber reversed."""
    folder = tmp_path_factory.mktemp("slab")
    dicom_series.write_mni_series(folder, slab=(20, 32), reversed_instance_numbers=True, seed=2)
    return folder, read_dicom_series(folder)


def threshold_labels(volume):
    """(K, R, C) int32 labels from intensity bands with an empty value: 1, 3, 4 present, 2 absent."""
    labels = np.digitize(volume.data[0], [40, 90, 150]).astype(np.int32)  # 0..3
    labels[labels == 3] = 4
    labels[labels == 2] = 3
    return labels


def test_known_labels_round_trip(slab, tmp_path, dicom_series):
    folder, volume = slab
    labels = threshold_labels(volume)
    out = write_dicom_seg(labels, volume, tmp_path / "seg.dcm", class_names={4: "bright"})
    assert out == tmp_path / "seg.dcm" and sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]  # no temp left
    dicom_series.check_seg(out, volume, labels, {4: "bright"}, "AUTOMATIC")
    single = np.where(labels == 3, 3, 0)  # one segment: highdicom moves its identification to the shared groups
    dicom_series.check_seg(write_dicom_seg(single, volume, tmp_path / "one.dcm"), volume, single, {}, "AUTOMATIC")


def test_engine_labels_round_trip(slab, tmp_path, dicom_series):
    folder, volume = slab
    result = segment(volume, config=SegmentationConfig(max_iter=10, min_labels=3, seed=0, device="cpu"))
    assert result.labels.shape == volume.spatial_shape and result.n_labels >= 2
    out = write_dicom_seg(result.labels, volume, tmp_path / "engine.dcm")
    dicom_series.check_seg(out, volume, result.labels, {}, "AUTOMATIC")


def test_scribbled_classes_are_named_and_semiautomatic(slab, tmp_path, dicom_series):
    folder, volume = slab
    data = volume.data[0]
    scribbles = np.zeros(volume.spatial_shape, np.int32)
    scribbles[:, :3, :] = 1  # air at the front of the image
    scribbles[(data > np.percentile(data, 97)) & (scribbles == 0)] = 2  # brightest tissue
    result = segment(volume, scribbles=scribbles, config=SegmentationConfig(max_iter=10, seed=0, device="cpu"))
    names = {1: "air", 2: "white matter"}
    out = write_dicom_seg(result.labels, volume, tmp_path / "scribbled.dcm", class_names=names, scribbled=True)
    dicom_series.check_seg(out, volume, result.labels, names, "SEMIAUTOMATIC")


def test_multiframe_source_round_trip(slab, tmp_path, dicom_series):
    import highdicom as hd

    folder, volume = slab
    legacy = [pydicom.dcmread(p) for p in volume.meta["dicom_files"]]
    (tmp_path / "mf").mkdir()
    hd.legacy.LegacyConvertedEnhancedMRImage(legacy, hd.UID(), 7, hd.UID(), 1).save_as(tmp_path / "mf" / "mf.dcm")
    enhanced = read_dicom_series(tmp_path / "mf")
    labels = threshold_labels(enhanced)
    out = write_dicom_seg(labels, enhanced, tmp_path / "seg_mf.dcm")
    dicom_series.check_seg(out, enhanced, labels, {}, "AUTOMATIC")
    frames = pydicom.dcmread(out).PerFrameFunctionalGroupsSequence
    source = frames[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert source.ReferencedSOPInstanceUID == enhanced.meta["dicom_datasets"][0].SOPInstanceUID
    assert int(source.ReferencedFrameNumber) >= 1


def dciodvfy_report(path) -> str:
    """dciodvfy's output for ``path``, printed (run pytest -s to see the warnings); skips if it is not installed."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools) to validate")
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    report = (run.stdout + run.stderr).strip()
    print(f"dciodvfy {path}:\n{report}")
    return report


@pytest.mark.parametrize("source", ["mni", "pydicom_ct"])
def test_dciodvfy_finds_no_error(source, slab, tmp_path, dicom_series):
    if source == "mni":
        volume = slab[1]
    else:  # a real scanner's headers: pydicom's bundled 5-slice CT series
        volume = read_dicom_series(
            shutil.copytree(PYDICOM_FILES / "dicomdirtests" / "98892001" / "CT5N", tmp_path / "ct")
        )
    labels = threshold_labels(volume) if source == "mni" else (volume.data[0] > -300).astype(np.int32) * 2
    out = write_dicom_seg(labels, volume, tmp_path / "seg.dcm", class_names={1: "dark"})
    dicom_series.check_seg(out, volume, labels, {1: "dark"}, "AUTOMATIC")
    paths = [out] + ([volume.meta["dicom_files"][0]] if source == "mni" else [])  # our fixture's MR slices too
    for path in paths:
        report = dciodvfy_report(path)
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, "\n".join(errors)
        assert report.splitlines()[0] == ("Segmentation" if path == out else "MRImage")


# ---- bad input: InputError and nothing written -------------------------------------------------------------------


def test_nothing_to_write(slab, tmp_path):
    folder, volume = slab
    with pytest.raises(InputError, match="nothing to write"):
        write_dicom_seg(np.zeros(volume.spatial_shape, np.int32), volume, tmp_path / "empty.dcm")
    assert list(tmp_path.iterdir()) == []


def test_reference_must_be_dicom(slab, tmp_path):
    folder, volume = slab
    plain = Volume(volume.data, volume.spacing, volume.affine, source="scan.nii.gz")
    with pytest.raises(InputError, match="needs a DICOM series as input") as err:
        write_dicom_seg(threshold_labels(volume), plain, tmp_path / "seg.dcm")
    assert err.value.path == "scan.nii.gz"
    with pytest.raises(InputError, match=r"label map shape \(12, 59, 49\) differs"):
        write_dicom_seg(threshold_labels(volume)[..., 1:], volume, tmp_path / "seg.dcm")
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_a_source_file(tmp_path, dicom_series):
    dicom_series.write_mni_series(tmp_path, slab=(20, 24), seed=4)
    volume = read_dicom_series(tmp_path)
    source = volume.meta["dicom_files"][0]
    before = open(source, "rb").read()
    with pytest.raises(InputError, match="refusing to overwrite a source DICOM file"):
        write_dicom_seg(threshold_labels(volume), volume, source)
    assert open(source, "rb").read() == before
