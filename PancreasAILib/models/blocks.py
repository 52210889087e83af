"""Building blocks shared by the segmentation networks: conv + layer norm + GELU, down and up steps.

Layer normalisation (GroupNorm with one group: statistics over channels and space of one sample)
and GELU follow DiffuPan; unlike batch norm they behave the same with batch size 1, which is what
fits on a CPU and in 3D on small GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import nn


def layer_norm(channels: int) -> nn.GroupNorm:
    """Layer norm for (B, C, D, H, W) maps: one group, so every channel shares the sample's statistics."""
    return nn.GroupNorm(1, channels)


class ConvBlock(nn.Sequential):
    """Two 3D convolutions, each followed by layer norm and GELU (the basic U-Net stage)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (3, 3, 3)) -> None:
        padding = tuple(k // 2 for k in kernel)
        super().__init__(
            nn.Conv3d(in_channels, out_channels, tuple(kernel), padding=padding, bias=False),
            layer_norm(out_channels),
            nn.GELU(),
            nn.Conv3d(out_channels, out_channels, tuple(kernel), padding=padding, bias=False),
            layer_norm(out_channels),
            nn.GELU(),
        )


class Down(nn.Sequential):
    """Strided convolution (learned downsampling) then a ConvBlock. Anisotropic strides keep thick slices."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int]) -> None:
        stride = tuple(stride)
        super().__init__(
            nn.Conv3d(in_channels, out_channels, stride, stride=stride, bias=False),
            layer_norm(out_channels),
            nn.GELU(),
            ConvBlock(out_channels, out_channels),
        )


class Up(nn.Module):
    """Transposed-convolution upsampling, concatenation with the skip, then a ConvBlock."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, stride: Sequence[int]
    ) -> None:
        super().__init__()
        stride = tuple(stride)
        self.up = nn.ConvTranspose3d(in_channels, out_channels, stride, stride=stride, bias=False)
        self.block = ConvBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class Encoder(nn.Module):
    """A U-Net encoder returning the feature map of every level (full resolution first)."""

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(strides) != len(channels) - 1:
            raise ValueError("An encoder needs one stride per downsampling step (len(channels) - 1).")
        self.stem = ConvBlock(in_channels, channels[0])
        self.downs = nn.ModuleList(
            Down(channels[i], channels[i + 1], strides[i]) for i in range(len(strides))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features


class Decoder(nn.Module):
    """The matching U-Net decoder: from the deepest level back to full resolution."""

    def __init__(self, channels: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.ups = nn.ModuleList(
            Up(channels[i + 1], channels[i], channels[i], strides[i]) for i in reversed(range(len(strides)))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = up(x, skip)
        return x


def total_stride(strides: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """The factor each input dimension must be divisible by (product of the strides per axis)."""
    out = [1, 1, 1]
    for stride in strides:
        out = [a * b for a, b in zip(out, stride, strict=True)]
    return tuple(out)


class NetworkConfig:
    """JSON round trip for the network config dataclasses (stored in the weight manifest): widths as a list,
    strides as a list of lists on the way out, tuples on the way back in."""

    def to_dict(self) -> dict:
        data = asdict(self)  # type: ignore[call-overload]
        data["channels"] = list(self.channels)  # type: ignore[attr-defined]
        data["strides"] = [list(s) for s in self.strides]  # type: ignore[attr-defined]
        return data

    @classmethod
    def from_dict(cls, data: dict):
        values = dict(data)
        values["channels"] = tuple(values["channels"])
        values["strides"] = tuple(tuple(s) for s in values["strides"])
        return cls(**values)
