"""io.grid.place_on_grid: a label map on the image's own grid, or on a sub-box of it, is placed; one on
another grid (orientation, spacing, sub-voxel shift, no geometry and another shape) is refused naming its file.

The reference is the bundled MNI152 sample at 4 mm with its real affine."""

import numpy as np
import pytest

from unsupervised_seg import InputError, Volume
from unsupervised_seg.io.grid import index_to_ras, place_on_grid


def shifted(affine, offset):
    """The index -> RAS matrix of a box whose voxel (0, 0, 0) is voxel ``offset`` of ``affine``'s grid."""
    moved = affine.copy()
    moved[:3, 3] = (affine @ np.r_[offset, 1.0])[:3]
    return moved


@pytest.fixture()
def reference(mni_4mm):
    volume, _, tissues = mni_4mm
    return volume, tissues


def test_the_same_grid_is_returned_as_it_is(reference):
    volume, tissues = reference
    assert place_on_grid(tissues, volume.affine, volume, "t_seg.nii.gz") is tissues
    assert place_on_grid(tissues, None, volume, "t_seg.png") is tissues  # no geometry: the shape decides


def test_a_sub_box_of_the_same_grid_is_placed_and_padded_with_0(reference):
    volume, tissues = reference
    box = (slice(10, 30), slice(5, 25), slice(20, 28))
    placed = place_on_grid(tissues[box], shifted(volume.affine, (10, 5, 20)), volume, "crop_seg.nii.gz")
    assert placed.shape == volume.spatial_shape and placed.dtype == tissues.dtype
    expected = np.zeros_like(tissues)
    expected[box] = tissues[box]
    assert np.array_equal(placed, expected)


def test_a_box_reaching_past_the_image_is_placed_if_only_zeros_lie_outside(reference):
    volume, tissues = reference
    n_i = volume.spatial_shape[0]
    labels = np.zeros((10, 4, 4), np.uint8)
    labels[:5] = 2  # the first 5 rows lie inside the image, the last 5 beyond it
    placed = place_on_grid(labels, shifted(volume.affine, (n_i - 5, 0, 0)), volume, "edge_seg.nii.gz")
    assert placed[n_i - 5 :, :4, :4].tolist() == labels[:5].tolist() and placed.sum() == labels.sum()
    labels[7] = 1
    with pytest.raises(InputError, match="extends beyond the image's grid") as info:
        place_on_grid(labels, shifted(volume.affine, (n_i - 5, 0, 0)), volume, "edge_seg.nii.gz")
    assert info.value.path == "edge_seg.nii.gz"


def _rotated(affine):
    angle = np.deg2rad(10)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation @ affine


def _finer(affine):
    finer = affine.copy()
    finer[:3, :3] /= 2
    return finer


def _half_voxel(affine):
    return shifted(affine, (0.5, 0, 0))


@pytest.mark.parametrize(
    "other_grid", [_rotated, _finer, _half_voxel], ids=["rotated", "other_spacing", "sub_voxel_shift"]
)
def test_another_grid_is_refused_naming_the_file(reference, other_grid):
    volume, tissues = reference
    with pytest.raises(InputError) as info:
        place_on_grid(tissues, other_grid(volume.affine), volume, "other_scribbles.nii.gz", what="scribbles")
    assert info.value.path == "other_scribbles.nii.gz"
    assert str(info.value).startswith("other_scribbles.nii.gz: scribbles is on another grid than the image")


def test_without_geometry_the_shapes_must_agree(reference):
    volume, tissues = reference
    with pytest.raises(InputError, match=r"label map has shape \(4, 4, 4\), the image \(50, 59, 48\)") as info:
        place_on_grid(np.zeros((4, 4, 4), np.uint8), None, volume, "small.png")
    assert info.value.path == "small.png"
    plain = Volume(volume.data)  # an image without an affine: a smaller array cannot be placed either
    with pytest.raises(InputError, match="not on the image's grid"):
        place_on_grid(np.zeros((4, 4, 4), np.uint8), volume.affine, plain, "small.nii.gz")


def test_index_to_ras_of_an_image_without_affine_is_its_spacing():
    assert np.array_equal(index_to_ras(Volume(np.zeros((1, 3, 4)), (0.5, 2.0))), np.diag([0.5, 2.0, 1.0, 1.0]))
