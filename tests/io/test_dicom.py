"""DICOM series reader: geometry against the written positions and SimpleITK, bad input, compression, multi-frame."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from unsupervised_seg import InputError
from unsupervised_seg.io.dicom import read_dicom_series

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT5N = PYDICOM_FILES / "dicomdirtests" / "98892001" / "CT5N"  # 5 CT slices, 2.5 mm, stored top-down
CT_WITH_GAP = PYDICOM_FILES / "dicomdirtests" / "77654033" / "CT2"  # 4 CT slices: -99.48, 103.02, 104.27, 105.52
MR_RADIAL = PYDICOM_FILES / "dicomdirtests" / "98892003" / "MR700"  # 7 radial localiser slices in one series
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def mni_series(tmp_path_factory, dicom_series):
    """(folder, paths in slice order, expected values (K, R, C), affine (k, r, c) -> LPS): 4 mm MNI152, 48 slices."""
    folder = tmp_path_factory.mktemp("mni_series")
    paths, values, affine = dicom_series.write_mni_series(folder, reversed_instance_numbers=True, seed=1)
    return folder, paths, values, affine


def copy_series(src_paths, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for p in src_paths:
        shutil.copy(p, dst / Path(p).name)
    return dst


def sitk_volume(folder):
    """(array (K, R, C), affine (k, r, c) -> LPS) from SimpleITK's ImageSeriesReader."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    (uid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    image = reader.Execute()
    xyz = np.eye(4)
    xyz[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    xyz[:3, 3] = image.GetOrigin()
    krc = xyz[:, [2, 1, 0, 3]]  # SimpleITK index (x, y, z) = our (c, r, k)
    return sitk.GetArrayFromImage(image).astype(np.float32), krc


def test_reads_shuffled_series_with_written_geometry(mni_series):
    folder, paths, values, affine_lps = mni_series
    volume = read_dicom_series(folder)
    assert volume.data.shape == (1,) + values.shape and volume.data.dtype == np.float32
    # rescale applied: stored = (value - 10) / 0.25, the reader must return the values
    np.testing.assert_allclose(volume.data[0], values, atol=1e-4)
    assert volume.spacing == (4.0, 4.0, 4.0)
    np.testing.assert_allclose(volume.affine, LPS_FROM_RAS @ affine_lps, atol=1e-6)
    # slice k of the volume is the file written for slice k, whatever its name or InstanceNumber
    assert volume.meta["dicom_files"] == [str(p) for p in paths]
    assert [ds.SOPInstanceUID for ds in volume.meta["dicom_datasets"]] == [
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths
    ]
    assert "PixelData" not in volume.meta["dicom_datasets"][0]


def test_affine_matches_the_nifti_sample(mni_series):
    """World position of voxel (k, r, c) equals the bundled NIfTI's position of the same intensity."""
    import nibabel as nib

    from unsupervised_seg.demo.sample import SAMPLE_T1

    folder = mni_series[0]
    volume = read_dicom_series(folder)
    nifti = nib.load(SAMPLE_T1)
    t1 = np.asarray(nifti.dataobj)
    rng = np.random.default_rng(0)
    for k, r, c in rng.integers(0, volume.spatial_shape, size=(20, 3)):
        ras = volume.affine @ [k, r, c, 1]
        i, j, kk = np.round(np.linalg.inv(nifti.affine) @ ras)[:3].astype(int)
        assert volume.data[0, k, r, c] == pytest.approx(t1[i, j, kk] + 10.0)


@pytest.mark.parametrize("which", ["mni", "oblique", "pydicom_ct"])
def test_agrees_with_simpleitk(which, mni_series, tmp_path, dicom_series):
    if which == "mni":
        folder = mni_series[0]
    elif which == "oblique":  # the slab rotated 20 degrees about x and 10 about z: sorting along a tilted normal
        values, affine = dicom_series.mni_axial(slab=(20, 30))
        a, b = np.radians(20), np.radians(10)
        rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rot_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        rotation = np.eye(4)
        rotation[:3, :3] = rot_z @ rot_x
        folder = tmp_path / "oblique"
        dicom_series.write_series(folder, values, rotation @ affine, rescale=(0.25, 10.0), seed=3)
    else:
        folder = copy_series(sorted(CT5N.iterdir()), tmp_path / "ct5n")
    volume = read_dicom_series(folder)
    array, affine_lps = sitk_volume(folder)
    if np.dot(affine_lps[:3, 0], LPS_FROM_RAS[:3, :3] @ volume.affine[:3, 0]) < 0:  # other slice order
        array = array[::-1]
        affine_lps[:3, 3] += affine_lps[:3, 0] * (array.shape[0] - 1)
        affine_lps[:3, 0] *= -1
    np.testing.assert_allclose(volume.data[0], array, atol=1e-3)
    np.testing.assert_allclose(LPS_FROM_RAS @ volume.affine, affine_lps, atol=1e-3)


def test_pydicom_ct_series_sorted_by_position_with_rescale(tmp_path):
    folder = copy_series(sorted(CT5N.iterdir()), tmp_path / "ct5n")
    volume = read_dicom_series(folder)
    datasets = volume.meta["dicom_datasets"]
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert z == sorted(z) and len(z) == 5
    assert volume.spacing[0] == pytest.approx(2.5)
    assert volume.spacing[1:] == pytest.approx((0.488281, 0.488281))
    first = pydicom.dcmread(volume.meta["dicom_files"][0])
    expected = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_allclose(volume.data[0, 0], expected)
    assert float(first.RescaleIntercept) != 0


def test_ignores_non_dicom_files_and_segmentations(mni_series, tmp_path):
    folder, paths, values, _ = mni_series
    work = copy_series(paths, tmp_path / "series" / "sub")
    (work / "README.txt").write_text("not DICOM")
    (tmp_path / "series" / "notes.json").write_text("{}")
    shutil.copy(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR", work / "DICOMDIR")
    shutil.copy(PYDICOM_FILES / "liver_1frame.dcm", work / "earlier_seg.dcm")  # a SEG object: not a slice
    volume = read_dicom_series(tmp_path / "series")
    np.testing.assert_allclose(volume.data[0], values, atol=1e-4)


def test_rle_compressed_series_reads_like_uncompressed(tmp_path, dicom_series):
    from pydicom.uid import RLELossless

    values, affine = dicom_series.mni_axial(slab=(20, 26))
    dicom_series.write_series(tmp_path / "rle", values, affine, rescale=(0.25, 10.0), transfer_syntax=RLELossless)
    files = list((tmp_path / "rle").iterdir())
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_allclose(read_dicom_series(tmp_path / "rle").data[0], values, atol=1e-4)


def test_series_in_one_multiframe_file(mni_series, tmp_path):
    import highdicom as hd

    folder, paths, values, affine_lps = mni_series
    legacy = [pydicom.dcmread(p) for p in paths[::-1]]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(legacy, hd.UID(), 7, hd.UID(), 1)
    (tmp_path / "mf").mkdir()
    enhanced.save_as(tmp_path / "mf" / "enhanced.dcm")
    volume = read_dicom_series(tmp_path / "mf")
    np.testing.assert_allclose(volume.data[0], values, atol=1e-4)
    np.testing.assert_allclose(volume.affine, LPS_FROM_RAS @ affine_lps, atol=1e-6)
    assert len(volume.meta["dicom_datasets"]) == 1


# ---- bad input: each names the problem (and the file where there is one) --------------------------------------


def test_missing_slice_names_the_gap(mni_series, tmp_path):
    folder, paths, _, affine = mni_series
    work = copy_series(paths[10:20], tmp_path / "gap")
    (work / paths[14].name).unlink()
    with pytest.raises(InputError) as err:
        read_dicom_series(work)
    z = [affine[2, 3] + 4 * k for k in (13, 15)]
    message = str(err.value)
    assert "1 missing slice(s)" in message and "gap of 8 mm" in message and "expected 4 mm" in message
    assert f"between slice positions {z[0]:g} and {z[1]:g} mm" in message
    assert paths[15].name in message


def test_uneven_pydicom_series_names_the_gap(tmp_path):
    folder = copy_series(sorted(CT_WITH_GAP.iterdir()), tmp_path / "ct2")
    with pytest.raises(
        InputError,
        match=r"gap of 202\.5 mm between slice positions -99\.48 and 103\.02 mm.*"
        r"expected 1\.25 mm",
    ):
        read_dicom_series(folder)


def test_uneven_spacing(mni_series, tmp_path):
    folder, paths, _, _ = mni_series
    work = copy_series(paths[10:16], tmp_path / "uneven")
    ds = pydicom.dcmread(work / paths[13].name)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.5
    ds.save_as(work / paths[13].name)
    with pytest.raises(InputError, match=r"uneven slice spacing: gap of 5\.5 mm .*expected 4 mm"):
        read_dicom_series(work)


def test_two_series_are_listed_and_one_can_be_chosen(mni_series, tmp_path, dicom_series):
    folder, paths, _, _ = mni_series
    work = copy_series(paths, tmp_path / "two")
    values, affine = dicom_series.mni_axial(slab=(20, 25))
    other = dicom_series.write_series(
        work / "t2", values, affine, series_description="T2 FLAIR", series_number=9, seed=5
    )
    with pytest.raises(InputError) as err:
        read_dicom_series(work)
    message = str(err.value)
    first_uid = pydicom.dcmread(paths[0]).SeriesInstanceUID
    second_uid = pydicom.dcmread(other[0]).SeriesInstanceUID
    assert "2 DICOM series" in message and "--series-uid" in message
    assert f"{first_uid} (#3 MR 'T1 MPRAGE', 48 files)" in message
    assert f"{second_uid} (#9 MR 'T2 FLAIR', 5 files)" in message
    assert read_dicom_series(work, series_uid=second_uid).spatial_shape == (5, 59, 50)
    with pytest.raises(InputError, match="series 1.2.3 is not in the folder"):
        read_dicom_series(work, series_uid="1.2.3")


def test_mixed_orientations(tmp_path):
    folder = copy_series(sorted(MR_RADIAL.iterdir()), tmp_path / "radial")
    with pytest.raises(InputError, match="mixed slice orientations in one series"):
        read_dicom_series(folder)


def test_truncated_file_is_named(mni_series, tmp_path):
    folder, paths, _, _ = mni_series
    work = copy_series(paths[:8], tmp_path / "truncated")
    victim = work / paths[3].name
    victim.write_bytes(victim.read_bytes()[:-2000])
    with pytest.raises(InputError) as err:
        read_dicom_series(work)
    assert err.value.path == str(victim) and "pixel data" in err.value.problem


def test_truncated_header_is_named(mni_series, tmp_path):
    folder, paths, _, _ = mni_series
    work = copy_series(paths[:8], tmp_path / "garbage")
    victim = work / paths[2].name
    victim.write_bytes(victim.read_bytes()[:600])  # cut inside the header
    with pytest.raises(InputError) as err:
        read_dicom_series(work)
    assert err.value.path == str(victim) and "corrupt DICOM file" in err.value.problem


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.70"], ids=["MPEG2", "JPEG-LL"])
def test_undecodable_pixel_data_is_one_line_naming_file_and_syntax(syntax, mni_series, tmp_path):
    """MPEG2 video has no decoder at all; JPEG Lossless SV1 needs pylibjpeg-libjpeg or gdcm, else this error."""
    from pydicom.encaps import encapsulate

    folder, paths, _, _ = mni_series
    work = copy_series(paths[:4], tmp_path / "compressed")
    victim = work / paths[1].name
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8\x00\x00\x01\xb3" + b"\x00" * 60])  # not a decodable stream
    ds.save_as(victim)
    with pytest.raises(InputError) as err:
        read_dicom_series(work)
    name = pydicom.uid.UID(syntax).name
    assert err.value.path == str(victim) and f"cannot read pixel data (transfer syntax {name})" in err.value.problem
    assert "\n" not in str(err.value)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "image.nii").write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 400)  # a NIfTI-1 header start
    with pytest.raises(InputError, match="no DICOM images found in the folder"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        read_dicom_series(tmp_path / "notes.txt")


def test_single_slice(tmp_path):
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", tmp_path / "CT_small.dcm")
    with pytest.raises(InputError, match="single slice: a 3D volume needs at least two") as err:
        read_dicom_series(tmp_path)
    assert err.value.path.endswith("CT_small.dcm")


def test_duplicate_positions(mni_series, tmp_path):
    folder, paths, _, _ = mni_series
    work = copy_series(paths[:5], tmp_path / "dup")
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.EchoTime = "9.0"
    ds.save_as(work / "second_echo")
    with pytest.raises(InputError, match="two images at the same slice position"):
        read_dicom_series(work)
