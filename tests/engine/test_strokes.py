"""Strokes: a small stroked class is not drowned by a large one, and stroked voxels keep their class."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unsupervised_seg import Segmenter
from unsupervised_seg.engine.losses import scribble_loss


def test_scribble_loss_weighs_every_class_alike():
    """1000 voxels of class 1, 10 of class 2: the loss is the mean of the two classes' mean cross-entropies."""
    torch.manual_seed(0)
    response = torch.randn(1, 4, 10, 101)
    scribbles = torch.zeros(1, 10, 101, dtype=torch.long)
    scribbles[0, :, :100] = 1
    scribbles[0, :, 100] = 2
    per_voxel = F.cross_entropy(
        response.movedim(1, -1).reshape(-1, 4), (scribbles - 1).clamp_min(0).reshape(-1), reduction="none"
    ).reshape(10, 101)
    expected = (per_voxel[:, :100].mean() + per_voxel[:, 100].mean()) / 2
    assert float(scribble_loss(response, scribbles)) == pytest.approx(float(expected), rel=1e-5)


def test_stroked_voxels_keep_their_class_and_every_stroked_class_is_present(mni_4mm):
    """A 20-voxel stroke of a class the clustering would not make on its own comes out, as drawn."""
    volume, mask, tissues = mni_4mm
    scribbles = np.zeros(mask.shape, np.int64)
    wm = np.argwhere(tissues == 3)[:500]
    gm = np.argwhere(tissues == 2)[:500]
    scribbles[tuple(wm.T)] = 1
    scribbles[tuple(gm.T)] = 2
    odd = np.argwhere(tissues == 2)[-20:]  # a "lesion" class drawn inside grey matter
    scribbles[tuple(odd.T)] = 3
    result = Segmenter(max_iter=20).fit(volume, scribbles, mask)
    marked = scribbles > 0
    assert np.array_equal(result.labels[marked], scribbles[marked])
    assert {1, 2, 3} <= set(np.unique(result.labels))
