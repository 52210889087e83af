"""Array-level prediction of each stage (shared by the pipeline and by validation during training).

Inputs are already on the stage's grid and normalised (`grids.normalise_hu`); outputs are numpy
probabilities on the same grid. Mixed precision is used on CUDA only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from PancreasAILib.cascade.sliding import sliding_window
from PancreasAILib.models.multiphase import MultiPhaseTumourNet
from PancreasAILib.models.unet import CoarseUNet


def _autocast(device: torch.device):
    return (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )


def predict_stage1(
    net: CoarseUNet,
    image: np.ndarray,
    mask: np.ndarray,
    patch: Sequence[int],
    device: torch.device | str = "cpu",
    overlap: float = 0.25,
) -> np.ndarray:
    """Pancreas probability (Z, Y, X) from normalised phases (P, Z, Y, X) and the presence mask (P,)."""
    device = torch.device(device)
    mask_t = torch.from_numpy(np.asarray(mask, bool)).to(device)[None]
    inputs = torch.from_numpy(np.ascontiguousarray(image, np.float32)).to(device)

    def run(windows: torch.Tensor):
        with _autocast(device):
            return net(windows, mask_t.expand(len(windows), -1)), None

    net.eval()
    probs, _ = sliding_window(run, inputs, patch, overlap=overlap)
    return probs[1].cpu().numpy()


def predict_stage2(
    net: MultiPhaseTumourNet,
    image: np.ndarray,
    prior: np.ndarray,
    mask: np.ndarray,
    patch: Sequence[int],
    device: torch.device | str = "cpu",
    overlap: float = 0.25,
    mirror: bool = False,
) -> tuple[np.ndarray, float]:
    """Class probabilities (3, Z, Y, X) and the PDAC probability (max over windows) for one ROI.

    `mirror`: average over the four in-plane mirrorings of the box (left-right, front-back, both; the
    network was trained with those flips), nnU-Net's test-time mirroring restricted to the in-plane
    axes. The four form a group, so mirroring the input mirrors the result (exactly, where the
    window tiling is itself symmetric).
    """
    device = torch.device(device)
    mask_t = torch.from_numpy(np.asarray(mask, bool)).to(device)[None]
    phases = image.shape[0]
    inputs = torch.from_numpy(np.ascontiguousarray(np.concatenate([image, prior[None]]), np.float32)).to(
        device
    )

    def run(windows: torch.Tensor):
        with _autocast(device):
            return net(windows[:, :phases], windows[:, phases:], mask_t.expand(len(windows), -1))

    net.eval()
    flips: list[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if mirror else [()]
    total, pdac_total = None, 0.0
    for axes in flips:
        flipped = torch.flip(inputs, axes) if axes else inputs
        probs, pdac = sliding_window(run, flipped, patch, overlap=overlap)
        assert pdac is not None
        probs = torch.flip(probs, axes) if axes else probs
        total = probs if total is None else total + probs
        pdac_total += float(pdac[1])
    assert total is not None
    return (total / len(flips)).cpu().numpy(), pdac_total / len(flips)
