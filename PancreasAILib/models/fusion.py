"""Cross-phase attention fusion (after DiffuPan): F'_i = α_i·F_i + Σ_j β_ij·F_j over the phases present.

Each phase's feature map is summarised by global average pooling; β_ij is a softmax over the
*present* phases j of query·key similarities, α_i a per-channel gate. Missing phases are masked
out of the softmax and out of the final average, so a venous-only case is fused from venous alone
rather than from zero-filled channels that the network would have to learn to ignore.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossPhaseFusion(nn.Module):
    """(B, P, C, D, H, W) per-phase features + (B, P) presence mask -> (B, C, D, H, W) fused features."""

    def __init__(self, channels: int, key_dim: int = 16) -> None:
        super().__init__()
        self.query = nn.Linear(channels, key_dim)
        self.key = nn.Linear(channels, key_dim)
        self.gate = nn.Linear(channels, channels)
        self.scale = 1.0 / math.sqrt(key_dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, 1.0)  # start close to "keep your own features"

    def weights(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α (B, P, C) and β (B, P, P); β rows sum to one over present phases."""
        pooled = features.mean(dim=(3, 4, 5))  # (B, P, C)
        logits = torch.einsum("bik,bjk->bij", self.query(pooled), self.key(pooled)) * self.scale
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        beta = torch.softmax(logits, dim=-1)
        alpha = torch.sigmoid(self.gate(pooled))
        return alpha, beta

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        alpha, beta = self.weights(features, mask)
        mixed = torch.einsum("bij,bjcdhw->bicdhw", beta, features)
        fused = alpha[..., None, None, None] * features + mixed
        return masked_mean(fused, mask)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the phase axis of (B, P, C, ...) using only present phases."""
    weights = mask.to(features.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.einsum("bp,bp...->b...", weights, features)
