"""Stage 2's input read relative to the gland: each phase shifted so the gland sits at a fixed level.

Why: a radiologist calls a lesion hypo-attenuating against the parenchyma around it, not against a
number. A network that learnt the generator's absolute gland attenuation called whole healthy glands
tumour when the contrast was lower (held-out cases at x0.75: 7 of 10 healthy glands PDAC; on the
training maps 9 of 10 healthy glands got a lesion of 7-27 mL at confidence 0.54-0.97), and augmenting
the contrast in training did not unlearn it (session 17). Shifting each phase by its own gland level
removes the level and keeps every difference inside the box, so the lesion-to-gland contrast is what
is left to learn.

The level is a high percentile of the gland's voxels (65th): the tumour and the fat at the gland's
edge sit below it, so neither a large tumour nor a coarse gland mask moves it much. Training measures
it once per case on the whole gland and moves it through each patch's own intensity draw
(`training.augment.augment_hu`; measured on the patch, a tumour-centred patch's gland is mostly
tumour), validation on the validation prior, inference on stage 1's confident gland in the stage-2
box; all on HU, before `grids.normalise_hu`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

GLAND_LEVEL_PERCENTILE = 65.0
MIN_GLAND_VOXELS = 100  # about 1.2 mL at stage 2's 2 x 2 x 3 mm: fewer gives no reliable level


def gland_levels(image_hu: np.ndarray, gland: np.ndarray, phase_mask: np.ndarray) -> np.ndarray:
    """Each present phase's gland level in HU (P,); NaN for a missing phase or too small a gland."""
    levels = np.full(image_hu.shape[0], np.nan, np.float32)
    if int(gland.sum()) < MIN_GLAND_VOXELS:
        return levels
    for p in np.nonzero(phase_mask)[0]:
        levels[p] = np.percentile(image_hu[p][gland], GLAND_LEVEL_PERCENTILE)
    return levels


def shift_to_reference(image_hu: np.ndarray, levels: np.ndarray, reference_hu: Iterable[float]) -> np.ndarray:
    """`image_hu` (P, Z, Y, X) with each phase moved so its gland level lands on `reference_hu`.

    A phase without a level (missing, or no gland measured) is left as it is."""
    reference = np.asarray(list(reference_hu), np.float32)
    if reference.shape != levels.shape:
        raise ValueError(f"{len(reference)} reference levels for {len(levels)} phases")
    out = np.asarray(image_hu, np.float32).copy()
    for p, level in enumerate(levels):
        if np.isfinite(level):
            out[p] += reference[p] - level
    return out


def relative_to_gland(
    image_hu: np.ndarray,
    gland: np.ndarray,
    phase_mask: np.ndarray,
    reference_hu: Iterable[float] | None,
) -> np.ndarray:
    """Stage 2's HU input: as it is without a reference, else each phase shifted onto it (one path for
    training, validation and inference)."""
    if reference_hu is None:
        return image_hu
    return shift_to_reference(image_hu, gland_levels(image_hu, gland, phase_mask), reference_hu)


def reference_levels(cases: Iterable[dict[str, np.ndarray]]) -> tuple[float, float, float]:
    """The median gland level of each phase over cached training cases (their true gland, stage-2 box).

    Cases with the generator's randomised intensities are left out: their levels are arbitrary."""
    per_case = []
    for case in cases:
        if "meta" in case and json.loads(str(case["meta"])).get("domain_randomised"):
            continue
        per_case.append(gland_levels(case["s2_image"], case["s2_label"] > 0, case["phase_mask"]))
    if not per_case:
        raise ValueError("No cases with a measurable gland to set the reference levels from.")
    levels = np.nanmedian(np.stack(per_case), axis=0)
    if not np.all(np.isfinite(levels)):
        raise ValueError("Some phase has no gland level in any case: every phase must appear in training.")
    return tuple(round(float(v), 1) for v in levels)  # type: ignore[return-value]
