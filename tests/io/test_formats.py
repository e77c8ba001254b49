"""Readers and writers: round trips on the bundled MNI152 sample and scikit-image photos, bad files."""

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from PIL import Image

from unsupervised_seg import InputError, Volume
from unsupervised_seg.io import load_mask, load_scribbles, load_volume, save_label_series, save_labels
from unsupervised_seg.io.paths import find_companion, list_inputs, split_name

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_affine(spacing=(4.0, 4.0, 4.0)):
    """A rotated, translated index -> RAS affine, so that axis-order or sign mistakes show."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (-91.5, -120.25, -70.0)
    return affine


@pytest.fixture()
def t1_nifti(mni_4mm, tmp_path):
    """The 4 mm sample as int16 NIfTI with an oblique affine, qform code 1 and sform code 4."""
    volume, _, tissues = mni_4mm
    image = nib.Nifti1Image(volume.data[0].astype(np.int16), _oblique_affine())
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=4)
    path = tmp_path / "t1.nii.gz"
    nib.save(image, path)
    return path, tissues


def test_nifti_labels_keep_shape_affine_and_header_geometry(t1_nifti, tmp_path):
    path, tissues = t1_nifti
    volume = load_volume(path)
    source = nib.load(path)
    assert volume.data.shape == (1,) + source.shape and volume.data.dtype == np.float32
    assert np.allclose(volume.affine, source.affine) and volume.spacing == pytest.approx((4.0, 4.0, 4.0))
    out = save_labels(tissues.astype(np.int32), volume, tmp_path / "labels.nii.gz")
    written = nib.load(out)
    assert written.shape == source.shape
    assert np.array_equal(np.asarray(written.dataobj), tissues)
    assert written.get_data_dtype() == np.uint8
    for getter in ("get_qform", "get_sform"):
        matrix, code = getattr(written.header, getter)(coded=True)
        source_matrix, source_code = getattr(source.header, getter)(coded=True)
        assert code == source_code and np.allclose(matrix, source_matrix)
    assert written.header.get_zooms() == source.header.get_zooms()
    assert written.header.get_intent()[0] == "label"


def test_labels_above_255_are_written_as_uint16(t1_nifti, tmp_path):
    volume = load_volume(t1_nifti[0])
    labels = np.zeros(volume.spatial_shape, np.int32)
    labels[10:20, 10:20, 10:20] = 300
    written = nib.load(save_labels(labels, volume, tmp_path / "big.nii.gz"))
    assert written.get_data_dtype() == np.uint16 and int(np.asarray(written.dataobj).max()) == 300


def test_nrrd_output_is_on_the_same_physical_grid_for_simpleitk(t1_nifti, tmp_path):
    path, tissues = t1_nifti
    volume = load_volume(path)
    out = save_labels(tissues.astype(np.int64), volume, tmp_path / "labels.nrrd")
    image = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(image), tissues.T)  # SimpleITK arrays are (k, j, i)
    for index in [(0, 0, 0), (3, 7, 11), (49, 58, 47)]:
        expected = (LPS @ volume.affine @ np.r_[index, 1.0])[:3]
        assert np.allclose(image.TransformIndexToPhysicalPoint(index), expected, atol=1e-4)


def test_nrrd_and_mha_inputs_read_like_the_nifti(t1_nifti, tmp_path):
    path, _ = t1_nifti
    nifti = load_volume(path)
    for ext in ("nrrd", "mha"):
        converted = tmp_path / f"t1.{ext}"
        sitk.WriteImage(sitk.ReadImage(str(path)), str(converted))
        volume = load_volume(converted)
        assert np.array_equal(volume.data, nifti.data)
        assert np.allclose(volume.affine, nifti.affine, atol=1e-4)


def test_seg_nrrd_has_named_coloured_segments_on_the_grid(t1_nifti, tmp_path):
    path, tissues = t1_nifti
    volume = load_volume(path)
    names = {1: "CSF", 2: "grey matter"}
    out = save_labels(
        tissues.astype(np.int32),
        volume,
        tmp_path / "labels.seg.nrrd",
        class_names=names,
        class_colors={1: (0.0, 0.0, 1.0)},
    )
    segmentation = slicerio.read_segmentation(str(out))
    segments = {s["labelValue"]: s for s in segmentation["segments"]}
    assert {k: s["name"] for k, s in segments.items()} == {1: "CSF", 2: "grey matter", 3: "Cluster 3"}
    assert segments[1]["color"] == pytest.approx([0.0, 0.0, 1.0])
    assert np.array_equal(segmentation["voxels"], tissues)
    assert np.allclose(segmentation["ijkToLPS"], LPS @ volume.affine, atol=1e-4)
    labels, read_names = load_scribbles(out, volume)
    assert read_names == {1: "CSF", 2: "grey matter", 3: "Cluster 3"} and np.array_equal(labels, tissues)


def test_slicer_segmentation_saved_at_minimal_extent_is_placed_on_the_image_grid(t1_nifti, tmp_path):
    volume = load_volume(t1_nifti[0])
    box = (slice(10, 20), slice(15, 30), slice(20, 25))
    full_to_lps = LPS @ volume.affine
    cropped_to_lps = full_to_lps.copy()
    cropped_to_lps[:3, 3] = (full_to_lps @ np.r_[10, 15, 20, 1.0])[:3]
    segmentation = slicerio.create_segmentation((10, 15, 5), cropped_to_lps)
    first = np.zeros((10, 15, 5), bool)
    first[:5] = True
    slicerio.add_segment(segmentation, first, {"name": "liver", "color": [1, 0, 0]})
    slicerio.add_segment(segmentation, ~first, {"name": "kidney", "color": [0, 1, 0]})
    path = tmp_path / "scribbles.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    labels, names = load_scribbles(path, volume)
    assert names == {1: "liver", 2: "kidney"}
    expected = np.zeros(volume.spatial_shape, np.int64)
    expected[box] = np.where(first, 1, 2)
    assert np.array_equal(labels, expected)


def test_scribbles_on_another_grid_are_rejected_naming_the_file(t1_nifti, tmp_path):
    volume = load_volume(t1_nifti[0])
    shifted = volume.affine.copy()
    shifted[:3, 3] += 1.3  # sub-voxel shift
    wrong_shape = tmp_path / "small_scribbles.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), volume.affine), wrong_shape)
    wrong_shift = tmp_path / "shift_scribbles.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(volume.spatial_shape, np.uint8), shifted), wrong_shift)
    with pytest.raises(InputError, match="another grid") as info:
        load_scribbles(wrong_shift, volume)
    assert info.value.path == str(wrong_shift)
    # a smaller array with the same affine is a sub-box at the origin: accepted and padded
    labels, _ = load_scribbles(wrong_shape, volume)
    assert labels[:10, :10, :10].all() and labels.sum() == 1000
    rotated = tmp_path / "rot_scribbles.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(volume.spatial_shape, np.uint8), np.diag([4.0, 4.0, 4.0, 1.0])), rotated)
    with pytest.raises(InputError, match="another grid"):
        load_mask(rotated, volume)


def _missing(folder, good):
    return folder / "missing.nii.gz"


def _truncated(folder, good):
    (folder / "truncated.nii.gz").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    return folder / "truncated.nii.gz"


def _text_named_nifti(folder, good):
    (folder / "text.nii.gz").write_text("this is not an image\n")
    return folder / "text.nii.gz"


def _text(folder, good):
    (folder / "notes.txt").write_text("hello\n")
    return folder / "notes.txt"


def _fake_png(folder, good):
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return folder / "fake.png"


BAD_FILES = [
    (_missing, "no such file"),
    (_truncated, "truncated"),
    (_text_named_nifti, "cannot read as NIfTI"),
    (_text, "not a supported image file"),
    (_fake_png, "cannot read as a 2D image"),
]


@pytest.mark.parametrize("make, problem", BAD_FILES, ids=[make.__name__.strip("_") for make, _ in BAD_FILES])
def test_missing_truncated_and_foreign_files_raise_input_error_naming_them(make, problem, t1_nifti, tmp_path):
    bad = make(tmp_path, t1_nifti[0])
    with pytest.raises(InputError, match=problem) as info:
        load_volume(bad)
    assert info.value.path == str(bad)
    assert "\n" not in str(info.value)


def test_png_photo_round_trip_and_reference_scribble_convention(tmp_path):
    from skimage import data

    photo = data.astronaut()[::4, ::4]  # (128, 128, 3) uint8
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(path)
    volume = load_volume(path)
    assert volume.data.shape == (3, 128, 128) and volume.affine is None
    assert np.array_equal(np.moveaxis(volume.data, 0, -1), photo)
    labels = (photo[..., 0] > 128).astype(np.int32) + 1
    out = save_labels(labels, volume, tmp_path / "astronaut_labels.png")
    assert np.array_equal(np.asarray(Image.open(out)), labels)

    reference = np.full(photo.shape[:2], 255, np.uint8)  # the reference code: 255 = no scribble
    reference[10:20, 10:60] = 0
    reference[100:110, 40:90] = 1
    scribble_path = tmp_path / "astronaut_scribbles.png"
    Image.fromarray(reference).save(scribble_path)
    scribbles, names = load_scribbles(scribble_path, volume, reference_convention=True)
    assert names == {} and scribbles.dtype == np.int64
    assert set(np.unique(scribbles)) == {0, 1, 2}
    assert (scribbles[10:20, 10:60] == 1).all() and (scribbles[100:110, 40:90] == 2).all()
    raw, _ = load_scribbles(scribble_path, volume)  # without the option, 255 is class 255
    assert raw.max() == 255 and (raw[10:20, 10:60] == 0).all()


def test_grey_jpeg_is_one_channel_and_png_output_needs_2d(mni_4mm, tmp_path):
    from skimage import data

    path = tmp_path / "camera.jpg"
    Image.fromarray(data.camera()).save(path, quality=95)
    volume = load_volume(path)
    assert volume.data.shape == (1, 512, 512)
    with pytest.raises(InputError, match="PNG output needs a 2D image"):
        save_labels(np.zeros(mni_4mm[0].spatial_shape, int), mni_4mm[0], tmp_path / "x.png")
    assert not list(tmp_path.glob("*x*"))


def test_failed_write_leaves_no_partial_file(t1_nifti, tmp_path, monkeypatch):
    import unsupervised_seg.io.nifti as nifti

    volume = load_volume(t1_nifti[0])

    def broken_save(image, filename):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nifti.nib, "save", broken_save)
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match=r"out/labels.nii.gz: cannot write the output \(disk full\)"):
        save_labels(np.zeros(volume.spatial_shape, int), volume, out_dir / "labels.nii.gz")
    assert list(out_dir.iterdir()) == []  # the temporary file is gone, and its name was never shown


def test_label_series_is_4d_with_the_input_header(mni_4mm, tmp_path):
    volume, _, tissues = mni_4mm
    frames = np.stack([volume.data[0], volume.data[0] * 1.1], axis=-1)
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(frames, _oblique_affine()), path)
    from unsupervised_seg.io import load_frames

    loaded = load_frames(path)
    assert len(loaded) == 2 and loaded[1].data.shape == (1,) + tissues.shape
    out = save_label_series(np.stack([tissues, tissues], -1).astype(np.int32), loaded[0], tmp_path / "lab.nii.gz")
    written = nib.load(out)
    assert written.shape == frames.shape and np.allclose(written.affine, _oblique_affine())


def test_single_slice_nifti_is_2d_and_written_back_with_its_slice_axis(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(6, 10, 1), np.diag([0.5, 0.5, 3, 1])), path)
    volume = load_volume(path)
    assert volume.spatial_shape == (6, 10) and volume.spacing == (0.5, 0.5)
    written = nib.load(save_labels(np.ones((6, 10), int), volume, tmp_path / "slice_labels.nii.gz"))
    assert written.shape == (6, 10, 1)


def test_naming_rules(tmp_path):
    assert split_name("a/brain.nii.gz") == ("brain", ".nii.gz")
    assert split_name("b.SEG.NRRD") == ("b", ".seg.nrrd")
    for name in (
        "brain.nii.gz",
        "brain_scribbles.seg.nrrd",
        "brain_mask.nii.gz",
        "brain_labels.nii.gz",
        "knee.nrrd",
        "notes.txt",
        ".hidden.nii.gz",
    ):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_inputs(tmp_path)] == ["brain.nii.gz", "knee.nrrd"]
    assert find_companion(tmp_path / "brain.nii.gz", "_scribbles").name == "brain_scribbles.seg.nrrd"
    assert find_companion(tmp_path / "knee.nrrd", "_scribbles") is None
    (tmp_path / "brain_scribbles.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="more than one scribbles file"):
        find_companion(tmp_path / "brain.nii.gz", "_scribbles")


def test_volume_without_affine_writes_nifti_with_spacing(tmp_path):
    volume = Volume.from_array(np.random.default_rng(0).random((8, 9, 10)), spacing=(1.0, 2.0, 3.0))
    written = nib.load(save_labels(np.ones((8, 9, 10), int), volume, tmp_path / "l.nii.gz"))
    assert np.allclose(written.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    assert written.header.get_sform(coded=True)[1] == 1
