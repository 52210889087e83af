"""Stage 2: the multi-phase tumour network on the pancreas crop.

One encoder per phase (each phase's contrast tells a different story: the tumour is darkest against
the parenchyma in the arterial phase), each fed its phase and the stage-1 pancreas probability as a
prior channel (Qiu et al.'s cascade). Features meet through cross-phase attention at the bottleneck
and the deepest decoder levels (DiffuPan); shallower skips take the masked mean over present phases.
Two heads: segmentation (background, pancreas, tumour) and a patient-level PDAC classifier on an FPN
over the last three fused encoder levels (PANORAMA's multi-task design).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from PancreasAILib.models.blocks import Decoder, Encoder, NetworkConfig, total_stride
from PancreasAILib.models.fusion import CrossPhaseFusion, masked_mean


@dataclass
class MultiPhaseConfig(NetworkConfig):
    """Width and depth of stage 2. Defaults: the small CPU model that ships; `large()`: DiffuPan-sized."""

    phases: int = 3
    channels: Sequence[int] = (8, 16, 32, 64)
    strides: Sequence[Sequence[int]] = field(default_factory=lambda: ((1, 2, 2), (2, 2, 2), (2, 2, 2)))
    fusion_levels: int = 2  # cross-phase attention on the deepest N levels (bottleneck included)
    fpn_channels: int = 32
    classes: int = 3  # background, pancreas, tumour

    @classmethod
    def large(cls) -> MultiPhaseConfig:
        return cls(
            channels=(32, 64, 128, 256, 320),
            strides=((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
            fusion_levels=3,
            fpn_channels=64,
        )


class FPNClassifier(nn.Module):
    """Patient-level PDAC logits from the last three fused encoder levels (lateral 1x1, top-down sum, pooling)."""

    def __init__(self, level_channels: Sequence[int], width: int, classes: int = 2) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv3d(c, width, 1) for c in level_channels)
        self.head = nn.Sequential(
            nn.Linear(2 * width * len(level_channels), width), nn.GELU(), nn.Linear(width, classes)
        )

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        maps = [lat(x) for lat, x in zip(self.lateral, levels, strict=True)]
        for i in range(len(maps) - 2, -1, -1):  # top-down: the deeper level refines the shallower one
            maps[i] = maps[i] + F.interpolate(
                maps[i + 1], size=maps[i].shape[2:], mode="trilinear", align_corners=False
            )
        pooled = [torch.cat([m.mean(dim=(2, 3, 4)), m.amax(dim=(2, 3, 4))], dim=1) for m in maps]
        return self.head(torch.cat(pooled, dim=1))


class MultiPhaseTumourNet(nn.Module):
    """(B, P, D, H, W) phases, (B, 1, D, H, W) prior, (B, P) mask -> seg logits (B, 3, ...), PDAC logits (B, 2)."""

    def __init__(self, config: MultiPhaseConfig | None = None) -> None:
        super().__init__()
        self.config = config or MultiPhaseConfig()
        c = self.config
        levels = len(c.channels)
        if not 1 <= c.fusion_levels <= levels:
            raise ValueError(f"fusion_levels must be between 1 and {levels}.")
        self.encoders = nn.ModuleList(Encoder(2, c.channels, c.strides) for _ in range(c.phases))
        self.fusions = nn.ModuleDict(
            {str(i): CrossPhaseFusion(c.channels[i]) for i in range(levels - c.fusion_levels, levels)}
        )
        self.decoder = Decoder(c.channels, c.strides)
        self.seg_head = nn.Conv3d(c.channels[0], c.classes, 1)
        self.classifier = FPNClassifier(c.channels[-3:], c.fpn_channels)

    @property
    def divisor(self) -> tuple[int, int, int]:
        return total_stride(self.config.strides)

    def fused_features(
        self, image: torch.Tensor, prior: torch.Tensor, phase_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        mask = phase_mask.bool()
        present = mask.any(dim=0)
        per_phase: list[list[torch.Tensor] | None] = []
        for p, encoder in enumerate(self.encoders):
            if present[p]:  # phases missing from the whole batch cost nothing
                per_phase.append(encoder(torch.cat([image[:, p : p + 1], prior], dim=1)))
            else:
                per_phase.append(None)
        template = next(f for f in per_phase if f is not None)
        fused = []
        for level in range(len(template)):
            stack = torch.stack(
                [f[level] if f is not None else torch.zeros_like(template[level]) for f in per_phase], dim=1
            )
            fusion = self.fusions[str(level)] if str(level) in self.fusions else None  # noqa: SIM401
            fused.append(fusion(stack, mask) if fusion is not None else masked_mean(stack, mask))
        return fused

    def forward(
        self, image: torch.Tensor, prior: torch.Tensor, phase_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = image * phase_mask.to(image.dtype)[:, :, None, None, None]
        fused = self.fused_features(image, prior, phase_mask)
        return self.seg_head(self.decoder(fused)), self.classifier(fused[-3:])
