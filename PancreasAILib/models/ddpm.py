"""The denoiser of the anomaly heatmap: a tiny 2D U-Net that predicts the noise of a noised ROI slice.

Why tiny: the heatmap runs 2 x steps of these passes over every pancreas slice of a case and must
finish in seconds on two CPU cores, so the default is a few hundred thousand parameters, no
attention, and a pixel-unshuffle stem that runs the whole U-Net at half the input resolution
(tumours are several model pixels across, so the loss of detail costs little). Width, depth and
stem are configurable for GPU users.

Missing phases: the phases are channels; a missing one is zero and flagged by one constant
indicator plane per phase at the input and by a phase-mask embedding added to the timestep
embedding, so the network knows a zero is "absent", not "dark".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DDPMConfig:
    """Architecture of the denoiser; the defaults are the shipped CPU model."""

    phases: int = 3
    base: int = 24  # channels at the first level
    mults: Sequence[int] = (1, 2, 2, 2)  # channel multiplier per level (len = levels)
    blocks: int = 1  # residual blocks per level
    stem: int = 2  # pixel-unshuffle factor (1 = full resolution)
    emb: int = 64  # timestep / phase-mask embedding width

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mults"] = list(self.mults)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DDPMConfig:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "mults" in fields:
            fields["mults"] = tuple(fields["mults"])
        return cls(**fields)

    @property
    def stride(self) -> int:
        """The input side must be a multiple of this."""
        return self.stem * 2 ** (len(self.mults) - 1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _groups(ch: int) -> int:
    return 8 if ch % 8 == 0 else 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as a per-channel scale and shift."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Embedding(nn.Module):
    """Timestep and phase mask -> one conditioning vector."""

    def __init__(self, dim: int, phases: int) -> None:
        super().__init__()
        self.dim = dim
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.mask = nn.Linear(phases, dim)

    def forward(self, t: torch.Tensor, phase_mask: torch.Tensor) -> torch.Tensor:
        return F.silu(self.time(timestep_embedding(t, self.dim)) + self.mask(phase_mask.float()))


def mask_planes(x: torch.Tensor, phase_mask: torch.Tensor) -> torch.Tensor:
    """x with one constant 0/1 plane per phase appended (the network sees which channels are real)."""
    planes = phase_mask.float()[:, :, None, None].expand(-1, -1, *x.shape[-2:])
    return torch.cat([x, planes], dim=1)


class TinyUNet(nn.Module):
    """eps_theta(x_t, t, phase_mask): (N, P, H, W) -> (N, P, H, W); H and W multiples of `config.stride`."""

    def __init__(self, config: DDPMConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DDPMConfig()
        chans = [cfg.base * m for m in cfg.mults]
        self.embed = Embedding(cfg.emb, cfg.phases)
        self.stem = nn.Conv2d(2 * cfg.phases * cfg.stem**2, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cin = [], chans[0]
        for i, ch in enumerate(chans):
            level = nn.ModuleList()
            for _ in range(cfg.blocks):
                level.append(ResBlock(cin, ch, cfg.emb))
                cin = ch
            self.down_blocks.append(level)
            skips.append(ch)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = ResBlock(cin, cin, cfg.emb)
        self.up_blocks = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up_blocks.append(ResBlock(cin + skips[i], ch, cfg.emb))
            cin = ch
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(cin), cin)
        self.out = nn.Conv2d(cin, cfg.phases * cfg.stem**2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, phase_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        emb = self.embed(t, phase_mask)
        h = mask_planes(x, phase_mask)
        if cfg.stem > 1:
            h = F.pixel_unshuffle(h, cfg.stem)
        h = self.stem(h)
        skips = []
        for i, level in enumerate(self.down_blocks):
            for block in level:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.out(F.silu(self.out_norm(h)))
        if cfg.stem > 1:
            h = F.pixel_shuffle(h, cfg.stem)
        return h


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
