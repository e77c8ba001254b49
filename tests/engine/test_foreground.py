"""engine.foreground: without a mask the engine clusters the anatomy, not padding or the dark space around it.

Real data: the bundled MNI152 sample (zeros around a brain-extracted T1) and 3D Slicer's chest CT in HU
(-3024 outside its circular field of view).
"""

import numpy as np
import pytest

from unsupervised_seg import SegmentationConfig, Segmenter, Volume
from unsupervised_seg.demo.metrics import hungarian_dice
from unsupervised_seg.engine.foreground import detect_foreground


def test_brain_extracted_mr_keeps_the_brain_and_drops_the_zeros(mni_2mm):
    volume, mask, _ = mni_2mm
    found = detect_foreground(volume)
    # the whole brain, CSF at its surface included, but for 0.25 % of partial-volume voxels at its edge (below a
    # quarter of the way from the zeros to the threshold: the price of leaving out the air around a CT's body)
    assert found[mask].mean() > 0.997
    assert (found & ~mask).sum() < 0.02 * mask.sum()
    assert (found & (volume.data[0] == 0) & ~mask).sum() < 0.005 * mask.sum()  # hardly any background zero


def test_ct_padding_and_outside_air_are_left_out_lungs_kept(chest_ct):
    volume, body = chest_ct
    found = detect_foreground(volume)
    hu = volume.data[0]
    assert not found[hu == -3024].any()
    assert found[body].mean() > 0.99
    lungs = body & (hu < -500)
    assert lungs.sum() > 10_000 and found[lungs].mean() > 0.99
    # the partial-volume air around the body is not foreground (it was 4.7 % of the body before _dark_edge)
    assert (found & ~body).sum() < 0.02 * body.sum()


def test_known_padding_value_on_whole_slices(chest_ct):
    """An int16 volume with -32768 (a DICOM PixelPaddingValue) on its first slices as well: none of them kept."""
    volume, body = chest_ct
    data = volume.data.copy()
    data[..., :3] = -32768
    padded = Volume(data, volume.spacing, volume.affine, meta={"padding_value": -32768.0})
    found = detect_foreground(padded)
    assert not found[..., :3].any()
    assert found[..., 3:][body[..., 3:]].mean() > 0.99


def test_a_crop_inside_the_anatomy_keeps_everything(mni_2mm):
    """A box inside the brain: dark CSF touches its border, but it is anatomy, not background."""
    volume, mask, _ = mni_2mm
    centre = [int(np.mean(i)) for i in np.nonzero(mask)]
    box = tuple(slice(c - 12, c + 12) for c in centre)
    assert mask[box].mean() > 0.98
    assert detect_foreground(Volume(volume.data[(slice(None),) + box], volume.spacing)) is None


def test_no_mask_sample_with_three_labels_matches_the_masked_run(mni_2mm):
    """The newcomer's first run: the bundled sample without its mask, 3 labels (was Dice 0.30: background took
    a label)."""
    volume, mask, tissues = mni_2mm
    result = Segmenter(n_labels=3).fit(volume)
    assert (
        set(np.unique(result.labels[~mask])) <= {0, 1, 2, 3} and (result.labels[volume.data[0] == 0] == 0).mean() > 0.99
    )
    assert hungarian_dice(result.labels, tissues, mask)["mean"] >= 0.85


def test_padded_ct_spends_no_label_on_padding(chest_ct):
    volume, body = chest_ct
    result = Segmenter(n_labels=3, max_iter=30).fit(volume)
    hu = volume.data[0]
    assert np.all(result.labels[hu == -3024] == 0)
    assert (result.labels[body] > 0).mean() > 0.99
    assert set(np.unique(result.labels[body & (result.labels > 0)])) == {1, 2, 3}


@pytest.mark.parametrize("setting", ["none"])
def test_foreground_detection_can_be_switched_off(mni_4mm, setting):
    volume, _, _ = mni_4mm
    config = SegmentationConfig(foreground=setting, max_iter=5)
    assert config.resolved(3).foreground == "none"
    result = Segmenter(config).fit(volume)
    assert np.all(result.labels > 0)  # the whole grid is clustered
