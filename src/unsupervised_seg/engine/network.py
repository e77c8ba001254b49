"""ClusteringNet: the reference architecture of Kim, Kanezaki & Tanaka (2020), in 2D or 3D."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import nn


class ClusteringNet(nn.Module):
    """Feature extractor + differentiable clustering head.

    ``n_conv`` blocks of conv 3^d (padding 1) -> ReLU -> BatchNorm (first block in_channels -> q,
    the others q -> q), then the response head conv 1^d (q -> q) -> BatchNorm.

    forward: (B, in_channels, *spatial) -> response (B, n_clusters, *spatial); the cluster of a
    voxel is the argmax over the channel axis.
    """

    def __init__(self, spatial_dims: int, in_channels: int, n_clusters: int = 100, n_conv: int = 2):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        self.spatial_dims, self.in_channels, self.n_clusters, self.n_conv = (
            spatial_dims,
            in_channels,
            n_clusters,
            n_conv,
        )
        blocks = []
        for i in range(n_conv):
            blocks += [
                conv(in_channels if i == 0 else n_clusters, n_clusters, 3, padding=1),
                nn.ReLU(inplace=True),
                norm(n_clusters),
            ]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(conv(n_clusters, n_clusters, 1), norm(n_clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def hyper_parameters(self) -> dict:
        """Constructor arguments, for saving and re-creating the network."""
        return dict(
            spatial_dims=self.spatial_dims, in_channels=self.in_channels, n_clusters=self.n_clusters, n_conv=self.n_conv
        )
