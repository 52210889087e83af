"""The guide of the anomaly heatmap: a noise-conditioned healthy/tumour classifier of ROI slices.

It is trained with image-level labels only (tumour in the crop or not) on noised slices x_t, so
its gradient d log p(healthy | x_t, t) / d x_t can steer every DDIM decoding step towards a
healthy-looking pancreas (Dhariwal & Nichol's classifier guidance, as in Wolleb et al.).

Why a logit map with log-sum-exp pooling rather than global average pooling: a lesion is small
and the inference crop is larger than the training crop; a smooth maximum over a map of local
logits (multiple-instance learning) keeps the score independent of the field of view, and its
gradient lands on the lesion rather than spreading over the slice.

Why the pancreas region as an input (`region_input`): a slice crop is mostly not pancreas, and
bowel, fat and unenhanced vessels look like a hypo-attenuating lesion to a classifier that does not
know where the gland is. The dilated pancreas (the stage-1/2 mask at inference; never the tumour)
is an extra input plane, and the pooling only looks at logits over it, so the guidance gradient
falls inside the gland, where the heatmap is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from PancreasAILib.models.ddpm import Embedding, ResBlock, mask_planes


@dataclass
class NoiseClassifierConfig:
    """Architecture of the guide; the defaults are the shipped CPU model."""

    phases: int = 3
    base: int = 16
    mults: Sequence[int] = (1, 2, 4)
    stem: int = 2  # pixel-unshuffle factor
    emb: int = 64
    pool_sharpness: float = 4.0  # r of the log-sum-exp pooling (large: max, small: mean)
    region_input: bool = False  # the dilated pancreas as an input plane, and pooling only over it

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mults"] = list(self.mults)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NoiseClassifierConfig:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "mults" in fields:
            fields["mults"] = tuple(fields["mults"])
        return cls(**fields)

    @property
    def stride(self) -> int:
        return self.stem * 2 ** (len(self.mults) - 1)


class NoiseClassifier(nn.Module):
    """logit of "tumour" for x_t: (N, P, H, W), t: (N,), phase_mask: (N, P) -> (N,)."""

    def __init__(self, config: NoiseClassifierConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or NoiseClassifierConfig()
        chans = [cfg.base * m for m in cfg.mults]
        self.embed = Embedding(cfg.emb, cfg.phases)
        planes = 2 * cfg.phases + (1 if cfg.region_input else 0)
        self.stem = nn.Conv2d(planes * cfg.stem**2, chans[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = chans[0]
        for i, ch in enumerate(chans):
            self.blocks.append(ResBlock(cin, ch, cfg.emb))
            cin = ch
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.head_norm = nn.GroupNorm(8 if cin % 8 == 0 else 1, cin)
        self.head = nn.Conv2d(cin, 1, 1)

    def _check_region(self, region: torch.Tensor | None) -> torch.Tensor | None:
        if self.config.region_input and region is None:
            raise ValueError("This classifier needs the dilated pancreas region (N, 1, H, W) as `region`.")
        return region if self.config.region_input else None

    def logit_map(
        self, x: torch.Tensor, t: torch.Tensor, phase_mask: torch.Tensor, region: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, 1, h, w) local logits at the coarsest level."""
        cfg = self.config
        region = self._check_region(region)
        emb = self.embed(t, phase_mask)
        h = mask_planes(x, phase_mask)
        if region is not None:
            h = torch.cat([h, region.to(h)], dim=1)
        if cfg.stem > 1:
            h = F.pixel_unshuffle(h, cfg.stem)
        h = self.stem(h)
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        return self.head(F.silu(self.head_norm(h)))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, phase_mask: torch.Tensor, region: torch.Tensor | None = None
    ) -> torch.Tensor:
        region = self._check_region(region)
        logits = self.logit_map(x, t, phase_mask, region).flatten(1)
        r = self.config.pool_sharpness
        if region is None:
            return (torch.logsumexp(r * logits, dim=1) - math.log(logits.shape[1])) / r
        stride = self.config.stride
        inside = F.max_pool2d(region.to(logits), stride, stride).flatten(1) > 0
        inside = inside | ~inside.any(dim=1, keepdim=True)  # no region at all: pool everywhere
        masked = torch.where(inside, r * logits, torch.full_like(logits, -1e4))
        return (torch.logsumexp(masked, dim=1) - inside.sum(dim=1).float().log()) / r
