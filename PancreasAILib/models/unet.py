"""Stage 1: a coarse 3D U-Net that finds the pancreas (gland and tumour together) at low resolution.

It takes whichever phases are present as channels, plus one constant indicator channel per phase
so the network knows which channels are real (missing phases are zero and flagged, never imputed).
It runs at PANORAMA's coarse scale (about 4 mm in-plane), where a whole abdomen fits in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from PancreasAILib.models.blocks import Decoder, Encoder, NetworkConfig, total_stride


@dataclass
class CoarseUNetConfig(NetworkConfig):
    """Width and depth of the stage-1 network; the defaults are the small CPU configuration that ships."""

    phases: int = 3
    channels: Sequence[int] = (8, 16, 32, 64)
    strides: Sequence[Sequence[int]] = field(default_factory=lambda: ((2, 2, 2), (2, 2, 2), (2, 2, 2)))
    classes: int = 2  # background, pancreas (including tumour)


class CoarseUNet(nn.Module):
    """(B, P, D, H, W) phases + (B, P) presence mask -> (B, classes, D, H, W) logits."""

    def __init__(self, config: CoarseUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or CoarseUNetConfig()
        c = self.config
        self.encoder = Encoder(2 * c.phases, c.channels, c.strides)
        self.decoder = Decoder(c.channels, c.strides)
        self.head = nn.Conv3d(c.channels[0], c.classes, 1)

    @property
    def divisor(self) -> tuple[int, int, int]:
        return total_stride(self.config.strides)

    def forward(self, image: torch.Tensor, phase_mask: torch.Tensor) -> torch.Tensor:
        mask = phase_mask.to(image.dtype)[:, :, None, None, None]
        x = torch.cat([image * mask, mask.expand_as(image)], dim=1)
        return self.head(self.decoder(self.encoder(x)))
