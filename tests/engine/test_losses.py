"""Loss values on a tiny fixed 2D input, checked against values worked out by hand; the training loop's targets
(initial clustering, then its own argmax) on the same input."""

import math

import pytest
import torch

from unsupervised_seg.engine.losses import ClusteringLoss, continuity_loss, scribble_loss, similarity_loss

# response (B=1, q=2, 2x2): channel 0 = [[0, 1], [2, 0]], channel 1 = [[1, 0], [0, 0]]
RESPONSE = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])
# argmax per pixel: (0,0) -> 1, (0,1) -> 0, (1,0) -> 0, (1,1) -> 0 (tie: first channel)
PSEUDO = torch.tensor([[[1, 0], [0, 0]]])
SCRIBBLES = torch.tensor([[[0, 2], [1, 0]]])  # class 2 at (0,1) -> channel 1, class 1 at (1,0) -> channel 0


def ce_two(logit_true, logit_other):
    """Cross-entropy of a 2-way softmax, by hand: log(1 + exp(other - true))."""
    return math.log(1 + math.exp(logit_other - logit_true))


class _FixedResponse(torch.nn.Module):
    """A stand-in network whose response is RESPONSE for any input (a zero bias gives SGD a parameter)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image):
        return RESPONSE + self.bias


def test_training_fits_the_initial_targets_then_its_own_argmax_with_ties_to_the_first_channel(monkeypatch):
    """engine.training.train: step 1 (init_iter = 1) is fitted to the initial clustering, step 2 to the response's
    argmax, the first channel winning a tie (pixel (1, 1)); history counts the argmax labels in the ROI."""
    from unsupervised_seg import SegmentationConfig
    from unsupervised_seg.engine import training
    from unsupervised_seg.engine.preprocess import Prepared

    seen = []

    class RecordingLoss(ClusteringLoss):
        def forward(self, response, pseudo_labels, roi=None, scribbles=None):
            seen.append(pseudo_labels.clone())
            return super().forward(response, pseudo_labels, roi, scribbles)

    monkeypatch.setattr(training, "ClusteringLoss", RecordingLoss)
    initial = torch.ones(1, 2, 2, dtype=torch.long)  # an initial clustering: every pixel in channel 1
    roi = torch.ones(1, 2, 2, dtype=torch.bool)
    prep = Prepared(
        torch.zeros(1, 1, 2, 2), None, roi, initial, (slice(0, 2), slice(0, 2)), (2, 2), roi[0].numpy(), (1.0, 1.0), 0
    )
    cfg = SegmentationConfig(min_labels=1, init_iter=1).resolved(2)
    model = _FixedResponse()
    history, stop = training.train(
        model, torch.optim.SGD(model.parameters(), lr=0.0), [prep], cfg, training.NETWORK, 2, torch.device("cpu"), 0
    )
    assert stop == "max_iter" and [h["iteration"] for h in history] == [1, 2]
    assert torch.equal(seen[0], initial) and torch.equal(seen[1], PSEUDO)
    assert [h["n_labels"] for h in history] == [2, 2]  # labels of the argmax: channels 0 and 1
    assert history[1]["similarity"] == pytest.approx(similarity_loss(RESPONSE, PSEUDO).item(), abs=1e-6)
    assert history[0]["similarity"] == pytest.approx(
        (ce_two(0, 1) + ce_two(1, 0) + ce_two(0, 2) + ce_two(0, 0)) / 4, abs=1e-6
    )  # against channel 1 everywhere


def test_similarity_by_hand():
    expected = (ce_two(1, 0) + ce_two(1, 0) + ce_two(2, 0) + ce_two(0, 0)) / 4  # 0.36165
    assert similarity_loss(RESPONSE, PSEUDO).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.36165, abs=1e-5)


def test_continuity_by_hand():
    # along rows: |2-0|, |0-1| (ch 0), |0-1|, |0-0| (ch 1) -> mean 1; along columns: |1-0|, |0-2|, |0-1|, 0 -> 1
    assert continuity_loss(RESPONSE).item() == pytest.approx(2.0)
    # spacing (2, 1): the row axis is twice as coarse, its term weighs min(spacing)/2 = 0.5
    assert continuity_loss(RESPONSE, spacing=(2.0, 1.0)).item() == pytest.approx(0.5 * 1.0 + 1.0)


def test_continuity_3d_adds_the_third_axis():
    r = torch.zeros(1, 1, 2, 2, 2)
    r[0, 0, 1] = 3.0  # a step of 3 along the first axis only
    assert continuity_loss(r).item() == pytest.approx(3.0)
    assert continuity_loss(r, spacing=(3.0, 1.0, 1.0)).item() == pytest.approx(1.0)


def test_continuity_gradient_is_the_autograd_one():
    """The hand-written backward agrees with autograd through torch.diff and with finite differences."""
    torch.manual_seed(0)
    r = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    spacing = (1.0, 2.0, 3.0)
    value = continuity_loss(r, spacing)
    value.backward()
    reference = r.detach().clone().requires_grad_()
    expected = sum(min(spacing) / s * torch.diff(reference, dim=a + 2).abs().mean() for a, s in enumerate(spacing))
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(r.grad, reference.grad, atol=1e-12)
    permuted = r.detach().permute(0, 1, 4, 3, 2)  # not contiguous: the same value as its contiguous copy
    assert continuity_loss(permuted).item() == pytest.approx(continuity_loss(permuted.contiguous()).item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: continuity_loss(x, spacing), (r.detach().clone().requires_grad_(),))


def test_scribble_by_hand():
    """Class 2's voxel (0, 1) is wrong (argmax channel 0) and counts; class 1's (1, 0) is right and adds nothing."""
    expected = (ce_two(0, 1) + 0.0) / 2  # 1.31326 / 2
    assert scribble_loss(RESPONSE, SCRIBBLES).item() == pytest.approx(expected, abs=1e-6)
    assert scribble_loss(RESPONSE, torch.zeros_like(SCRIBBLES)).item() == 0.0


def test_total_uses_unscribbled_voxels_for_similarity_and_reference_weights():
    parts = ClusteringLoss()(RESPONSE, PSEUDO, scribbles=SCRIBBLES)  # mu = 1, nu = 1, lambda = 0.5
    sim = (ce_two(1, 0) + ce_two(0, 0)) / 2  # pixels (0,0) and (1,1) only
    scr = ce_two(0, 1) / 2  # the right stroke (1, 0) adds nothing
    assert parts["similarity"].item() == pytest.approx(sim, abs=1e-6)
    assert parts["loss"].item() == pytest.approx(sim + 2.0 + 0.5 * scr, abs=1e-6)


def test_roi_excludes_voxels_from_similarity():
    roi = torch.tensor([[[True, False], [False, True]]])
    value = similarity_loss(RESPONSE, PSEUDO, roi.float()).item()
    assert value == pytest.approx((ce_two(1, 0) + ce_two(0, 0)) / 2, abs=1e-6)
