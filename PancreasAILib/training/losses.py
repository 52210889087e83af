"""Segmentation and classification losses.

`hybrid`: soft Dice + focal + SSIM (DiffuPan) — Dice for overlap of small tumours, focal for hard
voxels, SSIM for the structure of the probability map. `ce`: plain cross-entropy, which PANORAMA
found better calibrated for lesion detection. Either can add Qiu et al.'s boundary term: extra
cross-entropy weight on voxels at the border between two classes (where small tumours are lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """1 - batch soft Dice over `classes` (batch Dice: a patch without tumour does not divide by zero)."""
    probs = torch.softmax(logits, dim=1)
    losses = []
    for c in classes:
        p, t = probs[:, c], (target == c).to(probs.dtype)
        inter = (p * t).sum()
        losses.append(1.0 - (2 * inter + 1.0) / (p.sum() + t.sum() + 1.0))
    return torch.stack(losses).mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    loss = -((1 - logp_t.exp()) ** gamma) * logp_t
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def ssim_loss(
    logits: torch.Tensor, target: torch.Tensor, classes: tuple[int, ...], window: int = 5
) -> torch.Tensor:
    """1 - mean 3D SSIM between each class probability and its one-hot map (uniform local window)."""
    probs = torch.softmax(logits, dim=1)
    c1, c2 = 0.01**2, 0.03**2
    values = []
    pad = window // 2
    for c in classes:
        x, y = probs[:, c : c + 1], (target == c).to(probs.dtype)[:, None]
        mu_x = F.avg_pool3d(x, window, 1, pad, count_include_pad=False)
        mu_y = F.avg_pool3d(y, window, 1, pad, count_include_pad=False)
        var_x = F.avg_pool3d(x * x, window, 1, pad, count_include_pad=False) - mu_x**2
        var_y = F.avg_pool3d(y * y, window, 1, pad, count_include_pad=False) - mu_y**2
        cov = F.avg_pool3d(x * y, window, 1, pad, count_include_pad=False) - mu_x * mu_y
        ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        values.append(ssim.mean())
    return 1.0 - torch.stack(values).mean()


def boundary_weight(target: torch.Tensor, classes: int, extra: float) -> torch.Tensor:
    """1 everywhere, 1 + `extra` on voxels whose 3x3x3 neighbourhood holds more than one class."""
    onehot = F.one_hot(target, classes).permute(0, 4, 1, 2, 3).float()
    present = F.max_pool3d(onehot, 3, 1, 1).sum(dim=1)
    return 1.0 + extra * (present > 1).float()


@dataclass
class SegmentationLoss:
    """kind: "hybrid" (Dice + focal + SSIM) or "ce"; `boundary`: extra weight at class borders (0 = off)."""

    kind: str = "hybrid"
    classes: int = 3
    boundary: float = 0.0
    ssim_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("hybrid", "ce"):
            raise ValueError(f"Unknown loss {self.kind!r}: use 'hybrid' or 'ce'.")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = boundary_weight(target, self.classes, self.boundary) if self.boundary > 0 else None
        foreground = tuple(range(1, self.classes))
        if self.kind == "ce":
            loss = F.cross_entropy(logits, target, reduction="none")
            return (loss * weight).mean() if weight is not None else loss.mean()
        loss = soft_dice_loss(logits, target, foreground) + focal_loss(logits, target, weight=weight)
        if self.ssim_weight > 0:
            loss = loss + self.ssim_weight * ssim_loss(logits, target, foreground)
        return loss


def classification_loss(logits: torch.Tensor, target: torch.Tensor, pdac_weight: float = 3.0) -> torch.Tensor:
    """Weighted cross-entropy, healthy : PDAC = 1 : 3 (PANORAMA)."""
    weight = torch.tensor([1.0, pdac_weight], dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, target, weight=weight)
