"""Strokes: a small stroked class is not drowned by a large one, and stroked voxels keep their class."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unsupervised_seg import InputError, SegmentationConfig, Segmenter
from unsupervised_seg.demo.simulated_scribbles import scribbles_from_truth
from unsupervised_seg.engine.losses import scribble_loss


def test_scribble_loss_weighs_every_class_alike_and_counts_only_wrong_voxels():
    """1000 voxels of class 1, 10 of class 2: each class's cross-entropy summed over its wrong voxels (argmax not
    its channel) over all its stroked voxels, then the mean over the classes; zero once every stroke is right."""
    torch.manual_seed(0)
    response = torch.randn(1, 4, 10, 101)
    scribbles = torch.zeros(1, 10, 101, dtype=torch.long)
    scribbles[0, :, :100] = 1
    scribbles[0, :, 100] = 2
    per_voxel = F.cross_entropy(
        response.movedim(1, -1).reshape(-1, 4), (scribbles - 1).clamp_min(0).reshape(-1), reduction="none"
    ).reshape(10, 101)
    wrong = response[0].argmax(0) != (scribbles[0] - 1)
    assert 0 < int(wrong[:, :100].sum()) < 1000 and 0 < int(wrong[:, 100].sum()) < 10
    expected = ((per_voxel * wrong)[:, :100].sum() / 1000 + (per_voxel * wrong)[:, 100].sum() / 10) / 2
    assert float(scribble_loss(response, scribbles)) == pytest.approx(float(expected), rel=1e-5)
    right = response.clone()
    right[:, :2] += 100 * F.one_hot((scribbles - 1).clamp_min(0), 4).movedim(-1, 1)[:, :2]
    assert float(scribble_loss(right, scribbles)) == 0.0


def test_a_class_stroked_on_a_few_voxels_counts_as_min_voxels():
    """A 3-voxel stroke weighs each of its wrong voxels 1/25 (min_voxels, the default scr_min_voxels), not 1/3: on
    a chest CT one wrong bone voxel at 302 HU otherwise moved ~5 k soft-tissue voxels into bone."""
    torch.manual_seed(1)
    response = torch.randn(1, 3, 103)
    scribbles = torch.zeros(1, 103, dtype=torch.long)
    scribbles[0, :100] = 1
    scribbles[0, 100:] = 2
    per_voxel = F.cross_entropy(response[0].T, (scribbles[0] - 1), reduction="none")
    wrong = (response[0].argmax(0) != scribbles[0] - 1).float()
    assert 0 < int(wrong[100:].sum()) and 0 < int(wrong[:100].sum())
    loss = [((per_voxel * wrong)[:100].sum() / 100 + (per_voxel * wrong)[100:].sum() / n) / 2 for n in (3, 25)]
    assert float(scribble_loss(response, scribbles)) == pytest.approx(float(loss[0]), rel=1e-5)
    assert float(scribble_loss(response, scribbles, min_voxels=25)) == pytest.approx(float(loss[1]), rel=1e-5)
    assert SegmentationConfig().scr_min_voxels == 25
    with pytest.raises(InputError, match="scr_min_voxels"):
        SegmentationConfig(scr_min_voxels=0)


def test_the_head_phase_weighs_the_strokes_with_scr_min_voxels(mni_4mm, monkeypatch):
    from unsupervised_seg.engine import training

    volume, mask, truth = mni_4mm
    floors = []
    loss = training.scribble_loss

    def spy(response, scribbles, min_voxels=1):
        floors.append(min_voxels)
        return loss(response, scribbles, min_voxels)

    monkeypatch.setattr(training, "scribble_loss", spy)
    Segmenter(n_labels=3, seed=0, scr_min_voxels=7).fit(volume, scribbles_from_truth(truth, mask, volume.spacing), mask)
    assert floors and set(floors) == {7}


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


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_naming_the_channels_reorders_the_head_without_changing_its_responses(device):
    """Strokes of class 1 fall in channel 3 and class 2 in channel 0: after naming, channel 0 is class 1's and
    channel 1 class 2's; the head computes the same responses in the new order (momentum included). The head
    may live on a GPU while the cached features stay on the CPU, as in a fit on a GPU (this crashed there)."""
    from unsupervised_seg.engine.network import ClusteringNet
    from unsupervised_seg.engine.preprocess import Prepared
    from unsupervised_seg.engine.refine import name_channels

    torch.manual_seed(0)
    on_device = ClusteringNet(2, 1, n_clusters=5).head.to(device)
    optimizer = torch.optim.SGD(on_device.parameters(), lr=0.1, momentum=0.9)
    features = torch.randn(200, 5, 1, 1)

    def head(x):
        return on_device(x.to(device)).cpu()

    head(features).sum().backward()
    optimizer.step()
    on_device.eval()
    before = head(features).detach()
    channel = before.flatten(1).argmax(1)
    first, second = channel[0], next(c for c in channel.tolist() if c != int(channel[0]))
    picked = [i for i, c in enumerate(channel.tolist()) if c in (int(first), second)][:20]
    classes = torch.tensor([1 if int(channel[i]) == int(first) else 2 for i in picked]).reshape(-1, 1, 1)
    train = Prepared(
        features[:, :, 0, 0].T.reshape(1, 5, 20, 10),
        None,
        torch.ones(1, 20, 10, dtype=torch.bool),
        None,
        (),
        (20, 10),
        np.ones((20, 10), bool),
        (1.0, 1.0),
        0,
    )
    momentum = optimizer.state[on_device[0].weight]["momentum_buffer"].cpu().clone()
    name_channels(on_device, optimizer, (features[picked], classes), train)
    after = head(features).detach()
    order = [int(first), second] + [c for c in range(5) if c not in (int(first), second)]
    torch.testing.assert_close(after, before[:, order])
    torch.testing.assert_close(optimizer.state[on_device[0].weight]["momentum_buffer"].cpu(), momentum[order])
    assert head(features[picked]).flatten(1).argmax(1).tolist() == (classes.flatten() - 1).tolist()


def test_a_cluster_nobody_stroked_survives_the_head_phase(mni_4mm):
    """Grey and white matter stroked, CSF not: the head learns the strokes without its self-training merging the
    unstroked CSF cluster into grey matter (it did: 2 labels after this short fit, 40 CSF voxels left of ~2,300
    after a default one). Here the cluster keeps ~200 voxels, almost all CSF."""
    volume, mask, tissues = mni_4mm
    strokes = scribbles_from_truth(tissues, mask, volume.spacing)
    strokes = np.select([strokes == 2, strokes == 3], [1, 2], 0)  # GM -> 1, WM -> 2; no CSF stroke
    seg = Segmenter(n_clusters=16, max_iter=30, seed=0)
    seg.fit(volume, mask=mask)  # then the head learns the strokes: the path of the one-shot fit
    result = seg.fit(volume, strokes, mask)
    assert {entry["phase"] for entry in result.history} == {"head"}
    unstroked = [np.bincount(tissues[(result.labels == k) & mask], minlength=4) for k in range(3, 17)]
    assert max(u[1] for u in unstroked) >= 100 and max(u[1] / max(u.sum(), 1) for u in unstroked) >= 0.8
