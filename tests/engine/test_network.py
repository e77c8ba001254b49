"""ClusteringNet: the reference architecture in 2D and 3D from one code path."""

import pytest
import torch
from torch import nn

from unsupervised_seg import ClusteringNet
from unsupervised_seg.engine.network import PointwiseConv, kernel_size


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_layers(dims):
    net = ClusteringNet(dims, in_channels=3, n_clusters=10, n_conv=2)
    shape = (2, 3) + (6,) * dims
    out = net(torch.rand(shape))
    assert out.shape == (2, 10) + (6,) * dims
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    kinds = [type(m) for m in net.features] + [type(m) for m in net.head]
    assert kinds == [conv, nn.ReLU, norm, conv, nn.ReLU, norm, PointwiseConv, norm]
    assert net.features[0].kernel_size == (3,) * dims and net.features[0].in_channels == 3
    assert net.features[3].in_channels == 10 and net.head[0].weight.shape == (10, 10) + (1,) * dims


@pytest.mark.parametrize("dims", [2, 3])
def test_pointwise_head_is_a_kernel_1_convolution(dims):
    """The head's matrix product computes what a convolution of kernel 1 with its parameters computes, from the
    same initial values (a seed gives the same network as before, and older model files load)."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    reference = conv(6, 4, 1)
    torch.manual_seed(0)
    pointwise = PointwiseConv(dims, 6, 4)
    assert torch.equal(pointwise.weight, reference.weight) and torch.equal(pointwise.bias, reference.bias)
    assert set(pointwise.state_dict()) == set(reference.state_dict())
    x = torch.randn((3, 6) + (5,) * dims)
    assert torch.allclose(pointwise(x), reference(x), atol=1e-6)
    upstream = torch.randn((3, 4) + (5,) * dims)  # the same gradients reach the parameters
    (pointwise(x) * upstream).sum().backward()
    (reference(x) * upstream).sum().backward()
    assert torch.allclose(pointwise.weight.grad, reference.weight.grad, atol=1e-5)
    assert torch.allclose(pointwise.bias.grad, reference.bias.grad, atol=1e-5)
    one_voxel = x[:, :, :1, :1] if dims == 2 else x[:, :, :1, :1, :1]  # the head on stroke features
    assert torch.allclose(pointwise(one_voxel), reference(one_voxel), atol=1e-6)
    upstream = torch.randn((3, 4) + (1,) * dims)
    for module in (pointwise, reference):
        module.zero_grad()
        (module(one_voxel) * upstream).sum().backward()
    assert torch.allclose(pointwise.weight.grad, reference.weight.grad, atol=1e-5)
    assert torch.allclose(pointwise.bias.grad, reference.bias.grad, atol=1e-5)


def test_n_conv_and_rebuild_from_hyper_parameters():
    net = ClusteringNet(3, 1, n_clusters=4, n_conv=3)
    assert sum(isinstance(m, nn.Conv3d) for m in net.modules()) == 3 and isinstance(net.head[0], PointwiseConv)
    again = ClusteringNet(**net.hyper_parameters())
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 5, 5, 5)
    net.eval(), again.eval()
    assert torch.equal(net(x), again(x))


def test_rejects_other_dimensions():
    with pytest.raises(ValueError):
        ClusteringNet(4, 1)


def test_kernel_size_leaves_out_thick_slices():
    assert kernel_size((3.05, 3.05, 10.0)) == (3, 3, 1)  # the development set's chest CT
    assert kernel_size((2.0, 2.0, 3.0)) == (3, 3, 3)  # ITK's T1: 1.5x, still mixed
    assert kernel_size((0.7, 5.0)) == (3, 1)
    assert kernel_size((1.0, 1.0)) == (3, 3)


def test_anisotropic_kernel_keeps_shape_and_survives_rebuild():
    net = ClusteringNet(3, 1, n_clusters=4, kernel=(3, 3, 1))
    assert net.features[0].kernel_size == (3, 3, 1) and net.features[3].padding == (1, 1, 0)
    x = torch.zeros(1, 1, 6, 6, 5)
    x[..., 2] = 1.0  # one bright slice: without context along the last axis its neighbours stay unaffected
    net.eval()
    out = net(x)
    assert out.shape == (1, 4, 6, 6, 5)
    assert torch.allclose(out[..., 0], out[..., 1]) and not torch.allclose(out[..., 1], out[..., 2])
    again = ClusteringNet(**net.hyper_parameters())
    again.load_state_dict(net.state_dict())
    again.eval()
    assert again.kernel == (3, 3, 1) and torch.equal(net(x), again(x))
    with pytest.raises(ValueError):
        ClusteringNet(3, 1, kernel=(3, 2, 1))
