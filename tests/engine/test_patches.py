"""engine.patches.PatchSampler: batches of patches cut from one place of every map, centred in the ROI, with
scribbled voxels over-sampled, the same for the same seed; choose_patch_size within its bounds.

The image's channels hold each voxel's coordinates, so a patch tells where it was cut.
"""

import numpy as np
import pytest
import torch

from unsupervised_seg.engine.config import SegmentationConfig
from unsupervised_seg.engine.patches import PatchSampler, choose_patch_size

SHAPE = (24, 20, 22)
PATCH = (6, 4, 8)
CENTRE = tuple(p // 2 for p in PATCH)  # the voxel of a patch at its sampled centre


def coordinate_maps(roi, scribbles=None, targets=True):
    """Sampler maps on SHAPE: image channels = voxel coordinates (i, j, k); targets = a voxel id."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")).astype(np.float32)
    ids = np.arange(np.prod(SHAPE)).reshape(SHAPE) % 97
    maps = {"image": torch.from_numpy(grid)[None], "roi": torch.from_numpy(roi)[None]}
    if scribbles is not None:
        maps["scribbles"] = torch.from_numpy(scribbles)[None].long()
    if targets:
        maps["targets"] = torch.from_numpy(ids)[None].long()
    return maps, ids


def box_roi():
    """A box in the middle, far enough from the border that no patch centred in it is moved inwards."""
    roi = np.zeros(SHAPE, bool)
    roi[8:16, 6:14, 9:13] = True
    return roi


def centres(batch):
    """(B, 3) coordinates of the voxel at each patch's centre."""
    return batch["image"][(slice(None), slice(None)) + CENTRE].long().numpy()


def test_patch_shapes_dtypes_and_one_place_for_every_map():
    roi = box_roi()
    scribbles = np.zeros(SHAPE, np.int64)
    scribbles[10, 8, 10:12] = 3
    maps, ids = coordinate_maps(roi, scribbles)
    sampler = PatchSampler(maps, PATCH, batch=5, seed=0)
    batch = sampler.sample()
    assert set(batch) == {"image", "roi", "scribbles", "targets"}
    assert batch["image"].shape == (5, 3) + PATCH and batch["image"].dtype == torch.float32
    assert batch["roi"].shape == (5,) + PATCH and batch["roi"].dtype == torch.bool
    assert batch["scribbles"].dtype == batch["targets"].dtype == torch.long
    assert sampler.probe.shape == (5, 3) + PATCH
    for b in range(5):  # a crop of the volume, every map cut at the same place
        box = tuple(slice(s, s + p) for s, p in zip(batch["image"][b, :, 0, 0, 0].long().tolist(), PATCH))
        assert torch.equal(batch["image"][b], maps["image"][0][(slice(None),) + box])
        assert np.array_equal(batch["roi"][b].numpy(), roi[box])
        assert np.array_equal(batch["scribbles"][b].numpy(), scribbles[box])
        assert np.array_equal(batch["targets"][b].numpy(), ids[box])  # long values come back exactly


def test_maps_without_scribbles_or_targets_give_only_image_and_roi():
    maps, _ = coordinate_maps(box_roi(), targets=False)
    batch = PatchSampler(maps, PATCH, batch=2, seed=0).sample()
    assert set(batch) == {"image", "roi"}


def test_every_centre_lies_in_the_roi():
    roi = box_roi()
    sampler = PatchSampler(coordinate_maps(roi)[0], PATCH, batch=8, seed=1)
    found = np.concatenate([centres(sampler.sample()) for _ in range(25)])  # 200 patches
    assert roi[tuple(found.T)].all()
    assert len({tuple(c) for c in found}) > 50  # spread over the box (256 voxels), not one place


def test_scribbled_voxels_get_half_of_the_samples():
    roi = box_roi()
    scribbles = np.zeros(SHAPE, np.int64)
    scribbles[12, 10, 10:12] = 1  # 2 of the ROI's 256 voxels
    draws = {}
    for name, strokes in (("with", scribbles), ("without", None)):
        sampler = PatchSampler(coordinate_maps(roi, strokes)[0], PATCH, batch=8, seed=2)
        found = np.concatenate([centres(sampler.sample()) for _ in range(50)])  # 400 patches
        draws[name] = np.mean(scribbles[tuple(found.T)] > 0)
    assert 0.4 <= draws["with"] <= 0.6, draws  # weight: the ROI's total again, on the strokes
    assert draws["without"] <= 0.05, draws  # 2 / 256 when they are not over-sampled


def test_same_seed_same_patches_other_seed_others():
    maps, _ = coordinate_maps(box_roi())

    def run(seed):
        sampler = PatchSampler(maps, PATCH, batch=4, seed=seed)
        return [sampler.probe] + [sampler.sample()["image"] for _ in range(3)]

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("memory, edge", [(1e12, 96), (1.0, 16)], ids=["plenty", "none"])
def test_patch_size_is_between_16_and_96_and_at_most_the_volume(monkeypatch, memory, edge):
    import unsupervised_seg.engine.patches as patches

    monkeypatch.setattr(patches, "available_memory", lambda device: memory)
    cfg = SegmentationConfig().resolved(3)
    assert choose_patch_size(cfg, 1, (200, 150, 120), torch.device("cpu")) == (edge,) * 3
    assert choose_patch_size(cfg, 1, (200, 40, 10), torch.device("cpu")) == (edge, min(edge, 40), 10)
