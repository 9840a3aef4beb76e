"""The networks porelab trains: one U-Net for 2D slices, 2.5D slice stacks and 3D volumes.

A network is named in ``model.json`` by a key of :data:`NETWORKS` and its
keyword arguments; nothing is ever imported from a dotted path found in a
file. The U-Net follows Ronneberger et al. (2015) with interpolating
upsampling (bilinear in 2D, trilinear in 3D, as in the paper): two 3x3(x3)
convolutions with normalisation and ReLU per level, max-pooling down,
interpolation up, skip connections concatenated, a 1x1(x1) head giving one
logit per voxel (pore).

Why not MONAI's nets: ``BasicUNet`` has a fixed depth of four levels and
``UNet`` upsamples by transposed convolutions; this one keeps depth, width and
normalisation configurable (the issue asks for it), and imports nothing but
torch on the workers that run inference (MONAI adds about 3 s to every worker
process start). The losses come from MONAI (:mod:`pipeline.models.losses`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "NETWORKS", "build_network", "count_parameters"]

Norm = Literal["batch", "instance", "group", "none"]


def _norm(kind: Norm, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    def __init__(self, dims: int, cin: int, cout: int, norm: Norm, dropout: float) -> None:
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(cin, cout, 3, padding=1, bias=bias), _norm(norm, dims, cout), nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=bias), _norm(norm, dims, cout), nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append((nn.Dropout2d if dims == 2 else nn.Dropout3d)(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with interpolating upsampling, for 2D (and 2.5D) or 3D inputs.

    Parameters
    ----------
    dims : {2, 3}
        Spatial dimensions: 2 for slices (2.5D: neighbouring slices as input
        channels), 3 for volumes.
    in_channels : int
        Input channels (2.5D: the number of slices k; 3D refinement: 2, the
        2D pore probability and the grey image).
    out_channels : int
        Output channels; 1 = the logit of "pore".
    features : int
        Channels of the first level; each level down doubles them, up to
        ``max_features``.
    depth : int
        Number of 2x downsamplings (levels - 1). Inputs should be a multiple
        of ``2 ** depth`` voxels along every axis (other sizes work, at a small
        cost in accuracy at the border).
    norm : {"batch", "instance", "group", "none"}
        Normalisation after each convolution. Batch norm makes inference
        independent of the tile size (its statistics are fixed in eval mode).
    max_features : int
        Cap of the channels per level.
    dropout : float
        Channel dropout after the bottleneck block (0 = none).
    residual_channel : int or None
        Refinement: the logit of this input channel (a probability) is added
        to the output, and the head starts at zero, so that an untrained
        network returns that probability and training learns corrections to it.
    """

    def __init__(
        self,
        *,
        dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 16,
        depth: int = 4,
        norm: Norm = "batch",
        max_features: int = 256,
        dropout: float = 0.0,
        residual_channel: int | None = None,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3; got {dims}")
        if depth < 1 or features < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("depth, features, in_channels and out_channels must be at least 1")
        self.dims = dims
        self.depth = depth
        widths = [min(features * 2**i, max_features) for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            _DoubleConv(dims, in_channels if i == 0 else widths[i - 1], w, norm, dropout if i == depth else 0.0)
            for i, w in enumerate(widths)
        )
        self.decoders = nn.ModuleList(
            _DoubleConv(dims, widths[i + 1] + widths[i], widths[i], norm, 0.0) for i in reversed(range(depth))
        )
        self.head = (nn.Conv2d if dims == 2 else nn.Conv3d)(widths[0], out_channels, 1)
        if residual_channel is not None:
            if not 0 <= residual_channel < in_channels:
                raise ValueError(f"residual_channel {residual_channel} is not one of the {in_channels} input channels")
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.residual_channel = residual_channel
        self._pool: Callable[..., torch.Tensor] = F.max_pool2d if dims == 2 else F.max_pool3d
        self._mode = "bilinear" if dims == 2 else "trilinear"

    @property
    def divisor(self) -> int:
        """Inputs should be a multiple of this many voxels along each axis."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = x
        skips: list[torch.Tensor] = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = self._pool(x, 2)
            x = enc(x)
            skips.append(x)
        skips.pop()
        for dec in self.decoders:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode=self._mode, align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        out = self.head(x)
        if self.residual_channel is not None:
            c = self.residual_channel
            p = inp[:, c : c + 1].clamp(1e-4, 1 - 1e-4)
            out = out + torch.log(p) - torch.log1p(-p)
        return out


#: Network names a ``model.json`` may use, and the class each builds.
NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet}


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """Build the network that ``architecture`` (``{"name": ..., **kwargs}``) describes.

    Raises
    ------
    ValueError
        For a name that is not in :data:`NETWORKS` or arguments it does not take.
    """
    arch = dict(architecture)
    name = arch.pop("name", None)
    if name not in NETWORKS:
        raise ValueError(f"network {name!r} is not one of porelab's networks ({', '.join(NETWORKS)})")
    try:
        return NETWORKS[name](**arch)
    except TypeError as exc:
        raise ValueError(f"network {name!r} does not take these arguments: {exc}") from None


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))
