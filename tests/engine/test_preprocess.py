"""engine.preprocess: intensity normalisation (percentiles inside the ROI -> [0, 1], outside the ROI its median,
constant images refused) and the half-resolution level of coarse-to-fine fitting."""

import numpy as np
import pytest

from unsupervised_seg import InputError, Volume
from unsupervised_seg.engine.preprocess import halve_resolution, normalise_intensity


def test_percentiles_map_to_0_and_1_linearly_and_the_tails_are_clipped():
    rng = np.random.default_rng(0)
    values = rng.normal(100.0, 20.0, (2, 10, 10, 10))
    values[1] = values[1] * 50 - 3000  # a second channel on another scale (CT-like)
    values[1, 0, 0, 0] = 1e6  # an outlier that must not set the range
    out = normalise_intensity(Volume(values.astype(np.float32)), None, lower=1.0, upper=99.0)
    assert out.dtype == np.float32 and out.shape == values.shape
    for c in range(2):
        lo, hi = np.percentile(values[c].astype(np.float32), [1.0, 99.0])
        expected = np.clip((values[c] - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(out[c], expected, atol=1e-5)
        assert out[c].min() == 0.0 and out[c].max() == 1.0
        assert np.mean(out[c] == 0.0) == pytest.approx(0.01, abs=0.002)  # the lower 1 % is clipped to 0
    assert out[1, 0, 0, 0] == 1.0


def test_statistics_come_from_the_roi_and_outside_it_is_the_roi_median():
    data = np.zeros((1, 8, 8, 8), np.float32)
    data[0, 2:6, 2:6, 2:6] = np.arange(64, dtype=np.float32).reshape(4, 4, 4)  # ROI values 0..63
    data[0, 0] = 5000.0  # bright outside the ROI: must not stretch the range
    roi = np.zeros((8, 8, 8), bool)
    roi[2:6, 2:6, 2:6] = True
    out = normalise_intensity(Volume(data), roi, lower=0.0, upper=100.0)
    np.testing.assert_allclose(out[0][roi], np.arange(64) / 63.0, atol=1e-6)
    assert np.all(out[0][~roi] == np.median(out[0][roi]))  # 31.5 / 63 = 0.5
    assert out[0, 0, 0, 0] == pytest.approx(0.5)


def test_heavy_tailed_image_falls_back_to_the_full_range():
    data = np.zeros((1, 20, 20, 20), np.float32)
    data[0, 0, 0, :3] = 5.0  # 0.04 % of the voxels: the 99.9th percentile is still 0
    out = normalise_intensity(Volume(data), None)
    assert out[0, 0, 0, :3].tolist() == [1.0, 1.0, 1.0] and out[0].sum() == 3.0


def test_mni_t1_in_the_brain_mask(mni_4mm):
    volume, mask, truth = mni_4mm
    before = volume.data.copy()
    out = normalise_intensity(volume, mask)
    inside = out[0][mask]
    assert inside.min() == 0.0 and inside.max() == 1.0
    assert np.mean(inside == 0.0) <= 0.006 and np.mean(inside == 1.0) <= 0.006  # 0.5 % clipped each side
    assert np.all(out[0][~mask] == np.median(inside))
    means = [inside[truth[mask] == k].mean() for k in (1, 2, 3)]
    assert means == sorted(means)  # CSF < GM < WM survives
    assert np.array_equal(volume.data, before)  # the input is left as it was


@pytest.mark.parametrize("roi, where", [(None, ""), ("box", " inside the ROI")], ids=["whole_image", "in_roi"])
def test_a_constant_image_is_refused_naming_the_source(roi, where):
    data = np.full((2, 6, 6, 6), 3.0, np.float32)
    data[0] = np.random.default_rng(0).random((6, 6, 6))  # channel 0 varies, channel 1 is constant
    mask = None
    if roi == "box":
        data[1, 0] = 9.0  # varies outside the ROI only
        mask = np.zeros((6, 6, 6), bool)
        mask[2:5] = True
    with pytest.raises(InputError) as info:
        normalise_intensity(Volume(data, source="scan.nii.gz"), mask)
    assert info.value.path == "scan.nii.gz"
    assert str(info.value) == f"scan.nii.gz: channel 1 is constant{where} (value 3): nothing to segment"


def test_halve_resolution_keeps_thin_strokes():
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(1, 5, 6, 7)
    scribbles = np.zeros((5, 6, 7), int)
    scribbles[3, 1:5, 5] = 2  # a one-voxel-thin stroke on an odd slice
    mask = np.ones((5, 6, 7), bool)
    coarse, coarse_scribbles, coarse_mask = halve_resolution(Volume(data, (1.0, 1.5, 2.0)), scribbles, mask)
    assert coarse.spatial_shape == (3, 3, 4) and coarse.spacing == (2.0, 3.0, 4.0)
    assert coarse.data[0, 0, 0, 0] == pytest.approx(data[0, :2, :2, :2].mean())
    assert coarse.data[0, 2, 2, 3] == pytest.approx(data[0, 4:, 4:, 6:].mean())  # partial edge block
    assert set(np.unique(coarse_scribbles)) == {0, 2} and np.count_nonzero(coarse_scribbles) == 3  # rows 1, 2-3, 4
    assert coarse_mask.all()


def test_halve_resolution_mask_takes_blocks_at_least_half_inside():
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True  # block (0, 0): all inside
    mask[0, 2:4] = True  # block (0, 1): 2 of 4 inside
    mask[2, 0] = True  # block (1, 0): 1 of 4
    coarse, scribbles, coarse_mask = halve_resolution(Volume(np.ones((1, 4, 4), np.float32)), None, mask)
    assert coarse.spatial_shape == (2, 2) and scribbles is None
    assert coarse_mask.tolist() == [[True, True], [False, False]]
    # when no block is half inside, every block the ROI touches is kept: a small ROI is never lost
    sparse = np.zeros((4, 4), bool)
    sparse[0, 0] = sparse[3, 3] = True
    coarse_mask = halve_resolution(Volume(np.ones((1, 4, 4), np.float32)), None, sparse)[2]
    assert coarse_mask.tolist() == [[True, False], [False, True]]


def test_halve_resolution_of_the_mni_sample(mni_2mm, mni_4mm):
    volume, mask, _ = mni_2mm
    coarse, _, coarse_mask = halve_resolution(volume, None, mask)
    assert coarse.spatial_shape == mni_4mm[0].spatial_shape and coarse.spacing == (4.0, 4.0, 4.0)
    np.testing.assert_allclose(coarse.data[0, 10, 20, 30], volume.data[0, 20:22, 40:42, 60:62].mean(), rtol=1e-5)
    assert abs(int(coarse_mask.sum()) * 8 - int(mask.sum())) <= 0.05 * mask.sum()  # the brain keeps its volume


def test_upper_percentile_flag_reaches_the_config_and_bad_percentiles_are_refused():
    from unsupervised_seg import SegmentationConfig
    from unsupervised_seg.api import make_segmenter
    from unsupervised_seg.cli.parser import build_parser, engine_overrides
    from unsupervised_seg.core.errors import InputError

    parser = build_parser({"segment": None, "train": None, "demo": None})
    args = parser.parse_args(["segment", "ct.nii.gz", "-o", "labels.nii.gz", "--upper-percentile", "99.5"])
    assert make_segmenter(**engine_overrides(args)).config.resolved(3).upper_percentile == 99.5
    defaults = SegmentationConfig()  # 3D: 99.9 (measured on the development set); 2D keeps 99.5
    assert (defaults.resolved(3).upper_percentile, defaults.resolved(2).upper_percentile) == (99.9, 99.5)
    for lower, upper in ((0.5, 101.0), (50.0, 50.0), (-1.0, 99.0), (100.0, None)):
        with pytest.raises(InputError, match="percentiles"):
            SegmentationConfig(lower_percentile=lower, upper_percentile=upper)
