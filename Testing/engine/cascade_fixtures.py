"""A small synthetic three-phase case (procedural anatomy, 2 mm) written as NIfTI, shared by cascade tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from PancreasAILib.geometry import BoundingBox, crop_to_box, mask_bounding_box
from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.synthesis import SynthesisConfig, procedural_anatomy, synthesize_case
from PancreasAILib.synthesis.dataset import write_nifti


@dataclass
class SmallCase:
    phases: dict[Phase, Path]
    truth: Path
    images: dict[Phase, sitk.Image]
    labels: sitk.Image


def make_small_case(folder: Path, seed: int = 3, name: str = "case", margin_mm: float = 45.0) -> SmallCase:
    """A 2 mm case cropped to the pancreas plus `margin_mm` in-plane (full height), so that even a stage 1
    that calls everything pancreas gives stage 2 a small box: tests stay fast."""
    config = SynthesisConfig.coarse(p_tumour=1.0, tumour_count_probs=(1.0,), z_margin_mm=(20.0, 25.0))
    case = synthesize_case(procedural_anatomy(seed), config, seed=seed)
    box = mask_bounding_box(case.labels > 0)
    box = BoundingBox(
        (box.low[0] - margin_mm, box.low[1] - margin_mm, -1e6),
        (box.high[0] + margin_mm, box.high[1] + margin_mm, 1e6),
    )
    images = {p: crop_to_box(image, box) for p, image in case.phases.items()}
    labels = crop_to_box(case.labels, box)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for phase in PHASE_ORDER:
        paths[phase] = write_nifti(folder / f"{name}_{PHASE_ORDER.index(phase):04d}.nii.gz", images[phase])
    truth = write_nifti(folder / f"{name}_truth.nii.gz", labels)
    return SmallCase(paths, truth, images, labels)
