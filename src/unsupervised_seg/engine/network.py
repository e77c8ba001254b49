"""ClusteringNet: the reference architecture of Kim, Kanezaki & Tanaka (2020), in 2D or 3D."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from torch import nn

# an axis whose voxels lie more than this many times further apart than along the finest axis gets no spatial
# context in the convolutions (kernel 1 along it), as nnU-Net plans kernels for anisotropic data: a 3 x 3 x 3
# kernel on a 3 x 3 x 10 mm chest CT mixes a rib with tissue 1 cm above and below it (development-set chest CT,
# seeds 0 / 1 / 2: mean Dice 0.850 / 0.650 / 0.844 with 3 x 3 x 3, 0.901 / 0.654 / 0.883 with 3 x 3 x 1;
# benchmarks/RESULTS.md)
ANISOTROPY_RATIO = 2.0


def kernel_size(spacing: Sequence[float]) -> Tuple[int, ...]:
    """The convolution kernel for voxels of ``spacing`` (mm per spatial axis): 3 along every axis, except 1
    along an axis more than ANISOTROPY_RATIO times coarser than the finest."""
    finest = min(spacing)
    return tuple(1 if s > ANISOTROPY_RATIO * finest else 3 for s in spacing)


class PointwiseConv(nn.Module):
    """A convolution of kernel 1 (the clustering head's linear map of each voxel's features), computed as one
    matrix product over the voxels: the same parameters (weight (out, in, 1, ...), bias (out,)), initial values
    and results as MONAI's ``Conv`` of kernel 1, in about two thirds of its time for forward and backward on the
    CPU (a chest CT refinement, head steps only: 10.2 s -> 8.5 s; benchmarks/RESULTS.md).

    forward: (B, in, *spatial) -> (B, out, *spatial).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1)  # its initialisation, and its names
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.flatten(1)
        if x[0, 0].numel() == 1:  # one voxel per image (the strokes' features): one product over the batch
            return F.linear(x.flatten(1), weight, self.bias).view(x.shape[0], -1, *x.shape[2:])
        batch = weight.expand(x.shape[0], -1, -1)
        out = torch.baddbmm(self.bias[None, :, None], batch, x.flatten(2))  # the bias added inside the product
        return out.view(x.shape[0], -1, *x.shape[2:])


class ClusteringNet(nn.Module):
    """Feature extractor + differentiable clustering head.

    ``n_conv`` blocks of conv ``kernel`` (3^d by default; same padding) -> ReLU -> BatchNorm (first block
    in_channels -> q, the others q -> q), then the response head conv 1^d (q -> q) -> BatchNorm.

    forward: (B, in_channels, *spatial) -> response (B, n_clusters, *spatial); the cluster of a
    voxel is the argmax over the channel axis.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        n_clusters: int = 100,
        n_conv: int = 2,
        kernel: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        kernel = tuple(int(k) for k in kernel) if kernel is not None else (3,) * spatial_dims
        if len(kernel) != spatial_dims or any(k < 1 or k % 2 == 0 for k in kernel):
            raise ValueError(f"kernel must hold {spatial_dims} odd sizes, got {kernel}")
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        self.spatial_dims, self.in_channels, self.n_clusters, self.n_conv, self.kernel = (
            spatial_dims,
            in_channels,
            n_clusters,
            n_conv,
            kernel,
        )
        blocks = []
        for i in range(n_conv):
            blocks += [
                conv(in_channels if i == 0 else n_clusters, n_clusters, kernel, padding=tuple(k // 2 for k in kernel)),
                nn.ReLU(inplace=True),
                norm(n_clusters),
            ]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(PointwiseConv(spatial_dims, n_clusters, n_clusters), norm(n_clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def hyper_parameters(self) -> dict:
        """Constructor arguments, for saving and re-creating the network."""
        return dict(
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            n_clusters=self.n_clusters,
            n_conv=self.n_conv,
            kernel=list(self.kernel),
        )
