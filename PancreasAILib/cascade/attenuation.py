"""How each lesion candidate looks against the rest of the gland, and what that says about PDAC.

PDAC enhances less than the parenchyma around it: it is hypo-attenuating in about nine patients in
ten in the pancreatic phase and in most in the portal-venous phase; iso-attenuating tumours are
the exception there. A candidate that is darker than the gland in neither of those phases is
therefore a weaker PDAC candidate, whatever the network says. The delayed phase is not evidence
either way: the tumour's fibrous stroma takes up contrast late, so PDAC is often iso- or even
hyper-attenuating then; with the delayed phase alone no lesion is weighed (its attenuation is
still recorded).

Why this is needed: with the venous phase alone the stage-2 network's confident false candidates
in tumour-free glands lie inside the gland beside the portal and splenic veins, at the gland's own
attenuation or above it (`benchmarks/false_lesions.py`). Such a candidate keeps a share
(`weight`) of its network confidence, so it ranks below comparable hypo-attenuating ones; it stays
in the lesion list with its attenuation, for the reader to judge (an iso-attenuating PDAC is rare
but real). Between clearly darker and clearly not, the share is graded over a few HU
(`confidence_factor`), because the contrast itself is measured with that much noise.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from PancreasAILib.cascade.lesions import LesionCandidate
from PancreasAILib.phases import PHASE_ORDER, Phase

MIN_GLAND_VOXELS = 50  # fewer voxels of gland outside the candidates: no reliable reference
EVIDENCE_PHASES = (Phase.ARTERIAL.value, Phase.VENOUS.value)  # where PDAC is reliably darker


def check_weight(weight: float) -> float:
    """The share a non-hypo-attenuating lesion keeps must be a share; returns it."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the weight of non-hypo-attenuating lesions must lie in [0, 1], got {weight}")
    return weight


def check_ramp(ramp_hu: float) -> float:
    """The grade's half-width is a non-negative number of HU; returns it."""
    if not (ramp_hu >= 0.0 and math.isfinite(ramp_hu)):
        raise ValueError(f"the attenuation grade's half-width must be a finite number >= 0 HU, got {ramp_hu}")
    return float(ramp_hu)


def effective_weighting(weight: float, ramp_hu: float) -> tuple[float, float]:
    """The weighting as it acts on confidences: with weight 1 every grade keeps all of them, so the
    grade is 0 (calibrations and notes compare weightings by this)."""
    return (weight, ramp_hu) if weight < 1.0 else (1.0, 0.0)


def gland_medians(
    regions: np.ndarray, roi_hu: np.ndarray, phase_mask: np.ndarray, gland: np.ndarray
) -> dict[str, float] | None:
    """The median HU of the gland outside every candidate, per phase given (None: too little gland)."""
    reference = gland & (regions == 0)
    if reference.sum() < MIN_GLAND_VOXELS:
        return None
    return {
        phase.value: float(np.median(roi_hu[p][reference]))
        for p, phase in enumerate(PHASE_ORDER)
        if phase_mask[p]
    }


def lesion_attenuation(
    lesion: np.ndarray, roi_hu: np.ndarray, medians: dict[str, float] | None
) -> dict[str, float] | None:
    """The lesion's mean HU (`lesion`: its mask on the ROI grid) minus the gland's median
    (`gland_medians`), per phase given; `roi_hu`: (P, Z, Y, X) in PHASE_ORDER."""
    if medians is None:
        return None
    return {
        phase.value: round(float(roi_hu[p][lesion].mean()) - medians[phase.value], 1)
        for p, phase in enumerate(PHASE_ORDER)
        if phase.value in medians
    }


def darkest_evidence(contrast: dict[str, float] | None) -> float | None:
    """The lesion's lowest contrast (HU) in the arterial or venous phase; None when neither was compared."""
    evidence = [value for phase, value in (contrast or {}).items() if phase in EVIDENCE_PHASES]
    return min(evidence) if evidence else None


def confidence_factor(contrast: dict[str, float] | None, weight: float, ramp_hu: float = 0.0) -> float:
    """The share of its network confidence a lesion keeps, from its contrast against the gland.

    With `ramp_hu` 0, a hard cut: 1 when darker than the gland (arterial or venous), else `weight`.
    With `ramp_hu` R > 0, graded: 1 at R HU below the gland or darker, `weight` at R HU above or
    brighter, linear between. Why: a lesion's mean is measured against the gland's median with a few
    HU of noise, so with a hard cut a lesion 1 HU below the gland keeps all its confidence and one
    2 HU above loses half; a grade of that width makes the ranking not hinge on noise. No evidence
    (the delayed phase alone, or too little gland to compare with): 1."""
    darkest = darkest_evidence(contrast)
    if darkest is None:
        return 1.0
    if ramp_hu == 0.0:
        return 1.0 if darkest < 0.0 else weight
    darker = min(max((ramp_hu - darkest) / (2.0 * ramp_hu), 0.0), 1.0)
    return weight + (1.0 - weight) * darker


def is_hypoattenuating(contrast: dict[str, float] | None) -> bool | None:
    """Darker than the gland in the arterial or venous phase; None when neither was compared."""
    darkest = darkest_evidence(contrast)
    return None if darkest is None else darkest < 0.0


def weigh_by_attenuation(
    lesions: list[LesionCandidate],
    regions: np.ndarray,
    detection: np.ndarray,
    roi_hu: np.ndarray,
    phase_mask: np.ndarray,
    gland: np.ndarray,
    weight: float,
    ramp_hu: float = 0.0,
) -> tuple[list[LesionCandidate], np.ndarray]:
    """Each lesion with its attenuation and the share of its confidence that says
    (`confidence_factor`: 1 when clearly darker than the gland in the arterial or venous phase,
    `weight` when clearly not, graded over `ramp_hu` either side of the gland).

    Returns the lesions strongest first (renumbered from 1) and the detection map with the
    confidences they now have. `weight` 1 only records the attenuation.
    """
    check_weight(weight)
    check_ramp(ramp_hu)
    detection = detection.copy()
    medians = gland_medians(regions, roi_hu, phase_mask, gland)
    weighed = []
    for lesion in lesions:
        voxels = regions == lesion.id
        contrast = lesion_attenuation(voxels, roi_hu, medians)
        hypo = is_hypoattenuating(contrast)
        confidence = round(lesion.confidence * confidence_factor(contrast, weight, ramp_hu), 4)
        detection[voxels] = confidence
        weighed.append(
            replace(
                lesion,
                confidence=confidence,
                network_confidence=lesion.confidence,
                attenuation_hu=contrast,
                hypoattenuating=hypo,
            )
        )
    weighed.sort(key=lambda lesion: -lesion.confidence)
    return [replace(lesion, id=k) for k, lesion in enumerate(weighed, start=1)], detection
