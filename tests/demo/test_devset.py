"""The development set (benchmarks/devset.py) and its cases: the volumes that ship with dependencies (chest CT of
slicerio, the bundled sample), names, masks and the methods' view of a case without a mask."""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import devset  # noqa: E402
from cases import make_case, parse  # noqa: E402


def test_chest_ct_is_thick_slices_in_hu_with_padding_and_a_body_truth():
    v = devset.load("chestct")
    assert v.image.shape == (128, 128, 34) and v.spacing[2] == pytest.approx(10.0) and v.spacing[0] < 3.1
    assert v.meta["padding_value"] == -3024 and (v.image == -3024).mean() > 0.1  # outside the circular FOV
    fov = devset.field_of_view(v)
    assert not (v.roi & ~fov).any() and np.array_equal(v.mask, v.roi)  # the body, inside the field of view
    hu = v.image[v.roi]
    t = v.truth[v.roi]
    assert hu[t == 1].max() < -500 and hu[t == 3].min() >= 300  # air (the lungs) / soft tissue / bone
    sizes = np.bincount(t, minlength=4)[1:]
    assert sizes[0] > 0.2 * sizes.sum() and 0 < sizes[2] < 0.05 * sizes.sum()  # lungs inside the body; bone small
    nomask = devset.load("chestct_nomask")
    assert nomask.mask is None and np.array_equal(nomask.truth, v.truth)
    noisy = devset.load("chestct_noisy")
    assert np.array_equal(noisy.truth, v.truth) and np.array_equal(noisy.image[~fov], v.image[~fov])
    assert 20 < np.std(noisy.image[fov] - v.image[fov]) < 45  # 30 HU noise + offset field


def test_bundled_sample_without_its_mask():
    v = devset.load("mni2mm_nomask")
    assert v.mask is None and v.image.shape == (99, 117, 95)
    assert (v.image[~v.roi] == 0).mean() > 0.99  # the template is brain-extracted: the zeros around it are given
    assert set(np.unique(v.truth)) == {0, 1, 2, 3}


def test_case_names_and_the_mask_the_methods_get():
    assert parse("mni2mm_noisy_scribbles")[:4] == ("mni", 2, True, True)
    assert parse("headct_painted").style == "painted" and parse("chestct_nomask").volume == "chestct_nomask"
    with pytest.raises(ValueError, match="unknown case"):
        parse("chestct_dots")
    case = make_case("chestct_nomask")
    assert case.mask is None and case.given_mask.all() and case.class_names[3] == "bone"
    from methods import kmeans

    labels = kmeans(case, threads=1)["labels"]
    assert labels.min() == 1  # without a mask every voxel, padding included, gets a label
    painted = make_case("chestct_sparse")
    assert (painted.scribbles == 3).sum() == 30 and np.array_equal(painted.mask, painted.roi)


@pytest.mark.parametrize("name", ["colin2mm", "itkt1", "headct_padded"])
def test_debian_volumes_when_fetched(name):
    try:
        v = devset.load(name)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert v.n_classes == 3 and v.roi.any() and v.meta["version"]
    if name == "headct_padded":
        assert v.mask is None and (v.image == devset.PADDED_VALUE).any()
        assert not (v.roi & (v.image == devset.PADDED_VALUE)).any()


def test_strokes_on_the_thick_slice_chest_ct_stay_above_its_unsupervised_result():
    """Issue 12: adding correct strokes never lowers the result below the unsupervised one. The chest CT's
    imbalanced strokes hold 3 bone voxels, one of them soft tissue to the network (302 HU); scribbles are short
    centre-lines. Started from the network's head with every stroked voxel weighing 1/count, they fell to 0.872
    and 0.894 below the unsupervised 0.915 (benchmarks/RESULTS.md); a refit of the fitted segmenter equals a fresh
    fit with the strokes."""
    import copy

    from unsupervised_seg import Segmenter, Volume
    from unsupervised_seg.demo.metrics import hungarian_dice

    base = make_case("chestct")
    volume = Volume.from_array(base.image, base.spacing, affine=base.affine, source=base.name)
    segmenter = Segmenter(n_labels=3, seed=0)
    unsupervised = hungarian_dice(segmenter.fit(volume, mask=base.mask).labels, base.truth, base.roi)["mean"]
    assert unsupervised >= 0.9, unsupervised
    for style in ("imbalanced", "scribbles"):
        case = make_case(f"chestct_{style}")
        result = copy.deepcopy(segmenter).fit(volume, case.scribbles, case.mask)
        assert {entry["phase"] for entry in result.history} == {"head"}
        stroked = hungarian_dice(result.labels, case.truth, case.roi)["mean"]
        assert stroked >= unsupervised, (style, unsupervised, stroked)
