"""ClusteringNet: the reference architecture in 2D and 3D from one code path."""

import pytest
import torch
from torch import nn

from unsupervised_seg import ClusteringNet


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_layers(dims):
    net = ClusteringNet(dims, in_channels=3, n_clusters=10, n_conv=2)
    shape = (2, 3) + (6,) * dims
    out = net(torch.rand(shape))
    assert out.shape == (2, 10) + (6,) * dims
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    kinds = [type(m) for m in net.features] + [type(m) for m in net.head]
    assert kinds == [conv, nn.ReLU, norm, conv, nn.ReLU, norm, conv, norm]
    assert net.features[0].kernel_size == (3,) * dims and net.features[0].in_channels == 3
    assert net.features[3].in_channels == 10 and net.head[0].kernel_size == (1,) * dims


def test_n_conv_and_rebuild_from_hyper_parameters():
    net = ClusteringNet(3, 1, n_clusters=4, n_conv=3)
    assert sum(isinstance(m, nn.Conv3d) for m in net.modules()) == 4
    again = ClusteringNet(**net.hyper_parameters())
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 5, 5, 5)
    net.eval(), again.eval()
    assert torch.equal(net(x), again(x))


def test_rejects_other_dimensions():
    with pytest.raises(ValueError):
        ClusteringNet(4, 1)
