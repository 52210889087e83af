"""Tiny, randomly initialised cascade models registered in a temporary model folder.

They exercise every code path (registry, checksum, cascade, outputs) in seconds; tests that need
trained behaviour use the shipped weights instead and skip when those are absent.
"""

from __future__ import annotations

from pathlib import Path

import torch

from PancreasAILib.cascade.spec import STAGE1, STAGE2
from PancreasAILib.models.multiphase import MultiPhaseConfig, MultiPhaseTumourNet
from PancreasAILib.models.registry import register_weights, save_weights
from PancreasAILib.models.unet import CoarseUNet, CoarseUNetConfig

TINY = (4, 8, 16, 16)


def make_tiny_models(root: Path, seed: int = 0, gland_bias: float | None = 3.0) -> Path:
    """Register tiny stage-1/stage-2 models in `root`. `gland_bias` makes stage 1 call everything pancreas
    (a random network would find nothing), so the cascade always reaches stage 2."""
    torch.manual_seed(seed)
    stage1 = CoarseUNet(CoarseUNetConfig(channels=TINY))
    if gland_bias is not None:
        with torch.no_grad():
            stage1.head.bias.copy_(torch.tensor([0.0, gland_bias]))
            stage1.head.weight.zero_()
    stage2 = MultiPhaseTumourNet(MultiPhaseConfig(channels=TINY, fpn_channels=8))
    card = {"intended_use": "tests only"}
    for name, net, spec in (("stage1_pancreas", stage1, STAGE1), ("stage2_tumour", stage2, STAGE2)):
        path = save_weights(net.state_dict(), root / "staging" / f"{name}.safetensors")
        register_weights(
            name,
            path,
            version="test",
            config=net.config.to_dict(),
            input_spec=spec.to_dict(),
            card=card,
            root=root,
        )
    return root
