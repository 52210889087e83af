"""Sliding-window inference with Gaussian blending, for networks that also return a global score.

MONAI's `sliding_window_inference` blends spatial outputs only; stage 2 also returns a patch-level
PDAC logit, which is aggregated here as the maximum over windows (a tumour anywhere in the box
makes the patient positive). Windows are batched to amortise per-call overhead on the CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch


def _starts(size: int, patch: int, step: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = [*list(range(0, size - patch, step)), size - patch]
    return sorted(set(starts))


def gaussian_weight(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """nnU-Net's importance map: window centres count more than their edges."""
    grids = np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch], indexing="ij")
    weight = np.exp(-sum(g**2 / (2 * (sigma_scale * p) ** 2) for g, p in zip(grids, patch, strict=True)))
    weight = weight / weight.max()
    return torch.from_numpy(np.maximum(weight, 1e-3).astype(np.float32))


@torch.no_grad()
def sliding_window(
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    inputs: torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.25,
    batch: int = 2,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `predict` over (C, Z, Y, X) `inputs` in windows of `patch` (padded when smaller).

    `predict(batch (N, C, pz, py, px)) -> (logits (N, K, pz, py, px), scores (N, S) or None)`.
    Returns softmax probabilities (K, Z, Y, X) and the window-wise maximum of softmax(scores) (S,) or None.
    """
    spatial = inputs.shape[1:]
    pad = [max(p - s, 0) for p, s in zip(patch, spatial, strict=True)]
    if any(pad):
        inputs = torch.nn.functional.pad(inputs, [v for p in reversed(pad) for v in (p // 2, p - p // 2)])
    full = inputs.shape[1:]
    steps = [max(1, int(p * (1 - overlap))) for p in patch]
    corners = list(
        itertools.product(*[_starts(s, p, st) for s, p, st in zip(full, patch, steps, strict=True)])
    )
    weight = gaussian_weight(patch).to(inputs.device)
    accum: torch.Tensor | None = None
    norm = torch.zeros(full, device=inputs.device)
    best: torch.Tensor | None = None
    for i in range(0, len(corners), batch):
        chunk = corners[i : i + batch]
        windows = torch.stack(
            [inputs[:, z : z + patch[0], y : y + patch[1], x : x + patch[2]] for z, y, x in chunk]
        )
        logits, scores = predict(windows)
        probs = torch.softmax(logits.float(), dim=1)
        if accum is None:
            accum = torch.zeros((probs.shape[1], *full), device=inputs.device)
        for (z, y, x), p in zip(chunk, probs, strict=True):
            accum[:, z : z + patch[0], y : y + patch[1], x : x + patch[2]] += p * weight
            norm[z : z + patch[0], y : y + patch[1], x : x + patch[2]] += weight
        if scores is not None:
            top = torch.softmax(scores.float(), dim=1).amax(dim=0)
            best = top if best is None else torch.maximum(best, top)
    assert accum is not None
    out = accum / norm
    if any(pad):
        out = out[
            :,
            pad[0] // 2 : pad[0] // 2 + spatial[0],
            pad[1] // 2 : pad[1] // 2 + spatial[1],
            pad[2] // 2 : pad[2] // 2 + spatial[2],
        ]
    return out, best
