"""Patch samplers over the preprocessed cache: one for each stage, plus the correction records.

Cases are held in memory (a few MB each) and patches cut per step, with nnU-Net's foreground
oversampling: a share of stage-2 patches is centred on a tumour voxel, so small tumours are seen
often enough, the rest anywhere in the pancreas box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from PancreasAILib.cascade.gland_level import gland_levels, shift_to_reference
from PancreasAILib.errors import InputError
from PancreasAILib.training.augment import (
    INTENSITY_AUGMENTATIONS,
    IntensityAugmentation,
    SpatialDraw,
    augment_hu,
    crop_start,
    degrade_prior,
    drop_phases,
    mirror,
    network_input,
    spatial_patch,
    take_patch,
)
from PancreasAILib.training.preprocess import load_case

TUMOUR_PATCH_MIN_VOXELS = 10  # a patch counts as "PDAC" for the classifier from this many tumour voxels


def cached_names(folder: Path) -> list[str]:
    """File names of the complete cases in a cache folder (hidden names are files still being written)."""
    return sorted(p.name for p in Path(folder).glob("*.npz") if not p.name.startswith("."))


def load_cache(folder: Path, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    paths = [Path(folder) / n for n in cached_names(folder)]
    if not paths:
        raise InputError(
            f"No preprocessed cases (*.npz) in {folder}.",
            "Run `pancreasai train ... --synthetic N` or `--data RAW_DATASET` to build the cache first.",
        )
    return [load_case(p) for p in paths[:limit]]


class PatchSampler:
    """Random training batches for one stage from cached cases.

    stage 1: image (B, P, Z, Y, X), mask (B, P), label (B, Z, Y, X) in {0, 1}
    stage 2: adds prior (B, 1, Z, Y, X), label in {0, 1, 2}, and pdac (B,) patch labels.
    """

    def __init__(
        self,
        cases: Sequence[dict[str, np.ndarray]],
        stage: int,
        patch: Sequence[int],
        seed: int,
        tumour_fraction: float = 0.5,
        phase_dropout: bool = True,
        spatial: float = 0.6,
        p_all_phases: float = 0.4,
        p_venous_only: float = 0.0,
        elastic_voxels: float = 0.0,
        scale: tuple[float, float] = (0.75, 1.3),
        healthy_share: float | None = None,
        intensity: IntensityAugmentation = INTENSITY_AUGMENTATIONS["standard"],
        gland_reference_hu: Sequence[float] | None = None,
    ) -> None:
        if stage not in (1, 2):
            raise ValueError("stage must be 1 or 2")
        self.cases = list(cases)
        self.stage = stage
        self.patch = tuple(patch)
        self.rng = np.random.default_rng(seed)
        self.tumour_fraction = tumour_fraction
        self.phase_dropout = phase_dropout
        self.p_all_phases = p_all_phases
        self.p_venous_only = p_venous_only
        self.spatial = spatial  # share of patches drawn through a random rotation and scaling
        self.elastic_voxels = elastic_voxels  # largest elastic offset of those patches (0: affine only)
        self.scale = scale  # zoom range of those patches (> 1: the body looks smaller)
        # Stage 2: share of patches drawn from tumour-free cases (None: cases as they come, about one
        # in five). Why: a network that mostly sees glands with a tumour learns to expect one, and
        # with weak tumour contrast (venous phase alone) it then marks normal gland as tumour.
        self.healthy_share = healthy_share
        self.intensity = intensity  # how far each phase's HU is moved from the generator's table
        # Stage 2 relative to the gland (`cascade.gland_level`): each phase shifted onto these levels.
        self.gland_reference_hu = None if gland_reference_hu is None else tuple(gland_reference_hu)
        self._tumour_voxels: list[np.ndarray | None] = []
        self._gland_voxels: list[np.ndarray] = []
        self._gland_levels: list[np.ndarray] = []
        self._healthy: list[int] = []
        self._with_tumour: list[int] = []
        self._index(self.cases)

    def _index(self, cases: Sequence[dict[str, np.ndarray]]) -> None:
        key = "s2_label" if self.stage == 2 else "s1_label"
        first = len(self._tumour_voxels)
        self._tumour_voxels += [np.argwhere(c[key] == 2) if self.stage == 2 else None for c in cases]
        for i, voxels in enumerate(self._tumour_voxels[first:], start=first):
            if voxels is not None:  # stage 2: which cases have a tumour, for `healthy_share`
                (self._with_tumour if len(voxels) else self._healthy).append(i)
        self._gland_voxels += [np.argwhere(c[key] > 0) for c in cases]
        if self.gland_reference_hu is not None:  # each case's gland level per phase (HU; NaN: none)
            self._gland_levels += [
                gland_levels(c["s2_image"], c["s2_label"] > 0, c["phase_mask"]) for c in cases
            ]

    def add(self, cases: Sequence[dict[str, np.ndarray]]) -> None:
        """Take in cases that appeared since (a cache still being built beside the training)."""
        self.cases += list(cases)
        self._index(cases)

    def _draw_case(self, rng: np.random.Generator) -> int:
        if self.healthy_share is None or self.stage != 2:
            return int(rng.integers(len(self.cases)))
        if not self._healthy or not self._with_tumour:
            return int(rng.integers(len(self.cases)))
        group = self._healthy if rng.uniform() < self.healthy_share else self._with_tumour
        return group[int(rng.integers(len(group)))]

    def sample(self) -> dict[str, np.ndarray]:
        rng = self.rng
        index = self._draw_case(rng)
        case = self.cases[index]
        prefix = "s2_" if self.stage == 2 else "s1_"
        image, label = case[prefix + "image"], case[prefix + "label"]
        tumour = self._tumour_voxels[index]
        gland = self._gland_voxels[index]
        if self.stage == 2 and tumour is not None and len(tumour) and rng.uniform() < self.tumour_fraction:
            centre = tumour[rng.integers(len(tumour))]
        elif len(gland) and rng.uniform() < (0.9 if self.stage == 2 else 0.6):
            centre = gland[rng.integers(len(gland))]
        else:
            centre = None
        start = crop_start(label.shape, self.patch, centre, rng)
        if rng.uniform() < self.spatial:
            draw = SpatialDraw.draw(
                rng, scale=self.scale, elastic_voxels=self.elastic_voxels, patch=self.patch
            )
            middle = start + (np.asarray(self.patch) - 1) / 2.0

            def cut(array: np.ndarray, fill: float, order: int) -> np.ndarray:
                return spatial_patch(array, middle, self.patch, draw, fill, order)
        else:

            def cut(array: np.ndarray, fill: float, order: int) -> np.ndarray:
                return take_patch(array, start, self.patch, fill)

        img = cut(image, -1024, 1)
        lab = cut(label, 0, 0)
        mask = (
            drop_phases(case["phase_mask"], rng, self.p_all_phases, self.p_venous_only)
            if self.phase_dropout
            else case["phase_mask"].copy()
        )
        # Stage 2 relative to the gland: the level is measured on the whole gland of the case (as
        # inference measures it on stage 1's whole gland, not on a patch, whose gland may be mostly
        # tumour) and moved by the patch's own intensity draw.
        levels = None
        if self.stage == 2 and self.gland_reference_hu is not None:
            levels = self._gland_levels[index].copy()
        hu = augment_hu(img, mask, rng, self.intensity, levels=levels)
        if levels is not None:
            hu = shift_to_reference(hu, np.where(mask, levels, np.nan), self.gland_reference_hu)
        out = {"mask": mask}
        if self.stage == 2:
            prior = degrade_prior(cut(case["s2_prior"].astype(np.float32), 0.0, 1), rng)
            out["image"], lab, prior = mirror([network_input(hu, mask), lab, prior], rng)
            out["prior"] = prior[None]
            out["pdac"] = np.array(int((lab == 2).sum() >= TUMOUR_PATCH_MIN_VOXELS))
        else:
            out["image"] = network_input(hu, mask)
        out["label"] = lab.astype(np.int64)
        return out

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        samples = [self.sample() for _ in range(size)]
        return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
