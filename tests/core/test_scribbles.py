"""core.scribbles: validate_scribbles (shape, integer class ids, negatives, too many classes, empty), the class
count and the reference code's PNG convention."""

import numpy as np
import pytest

from unsupervised_seg import InputError
from unsupervised_seg.core.scribbles import from_reference_convention, scribble_classes, validate_scribbles

SHAPE = (4, 5, 6)


def strokes(dtype=np.int32, value=2):
    scribbles = np.zeros(SHAPE, dtype)
    scribbles[1, 2, 3] = value
    return scribbles


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float32, np.float64, bool])
def test_integer_class_ids_of_any_dtype_come_back_as_int64(dtype):
    out = validate_scribbles(strokes(dtype, 1), SHAPE, max_classes=8, source="s.nii.gz")
    assert out.dtype == np.int64 and out.shape == SHAPE
    assert out[1, 2, 3] == 1 and np.count_nonzero(out) == 1


def test_a_leading_channel_axis_of_one_is_dropped():
    out = validate_scribbles(strokes()[None], SHAPE, max_classes=8)
    assert out.shape == SHAPE and out[1, 2, 3] == 2


@pytest.mark.parametrize(
    "scribbles", [None, np.zeros(SHAPE, np.uint8), np.zeros(SHAPE)], ids=["none", "zeros", "float_zeros"]
)
def test_absent_or_empty_scribbles_are_none(scribbles):
    assert validate_scribbles(scribbles, SHAPE, max_classes=8) is None


def _fractional():
    return strokes(np.float32, 1.5)


def _nan():
    return strokes(np.float64, np.nan)


def _negative():
    return strokes(np.int16, -3)


def _too_many():
    return strokes(np.uint16, 9)


def _text():
    return np.full(SHAPE, "a")


def _other_shape():
    return np.zeros((4, 5, 7), np.uint8)


def _two_channels():
    return np.zeros((2,) + SHAPE, np.uint8)


INVALID = [
    (_other_shape, "scribbles have shape (4, 5, 7), the image (4, 5, 6)"),
    (_two_channels, "scribbles have shape (2, 4, 5, 6), the image (4, 5, 6)"),
    (_fractional, "scribbles must be integer class ids (0 = unlabelled)"),
    (_nan, "scribbles must be integer class ids (0 = unlabelled)"),
    (_text, "scribbles must be integer class ids, got dtype <U1"),
    (_negative, "scribbles contain negative class ids (min -3); 0 = unlabelled, k >= 1 = class k"),
    (_too_many, "scribbles use class ids up to 9, more than the 8 clusters of the network"),
]


@pytest.mark.parametrize("make, problem", INVALID, ids=[make.__name__.strip("_") for make, _ in INVALID])
def test_invalid_scribbles_raise_one_input_error_naming_the_file(make, problem):
    with pytest.raises(InputError) as info:
        validate_scribbles(make(), SHAPE, max_classes=8, source="brain_scribbles.nii.gz")
    assert info.value.path == "brain_scribbles.nii.gz" and info.value.problem == problem
    assert str(info.value) == f"brain_scribbles.nii.gz: {problem}"


def test_as_many_classes_as_clusters_is_allowed():
    assert validate_scribbles(strokes(value=8), SHAPE, max_classes=8).max() == 8


def test_class_count_is_the_largest_id():
    assert scribble_classes(None) == 0
    scribbles = strokes(value=3)  # ids 1 and 2 unused: they still reserve labels 1 and 2
    assert scribble_classes(scribbles) == 3


def test_reference_convention_255_is_unlabelled_and_classes_shift_by_one():
    png = np.array([[255, 0], [1, 254]], np.uint8)
    out = from_reference_convention(png)
    assert out.dtype == np.int64 and out.tolist() == [[0, 1], [2, 255]]
