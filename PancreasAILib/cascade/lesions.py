"""Lesion candidates from the tumour probability (PANORAMA / report-guided-annotation "dynamic" extraction).

Repeatedly: take the highest remaining probability p, grow the connected region above p / 2.5
around it, keep it as one lesion (confidence p) when it has at least `min_voxels` voxels, and
remove it. A region that touches an already kept lesion is that lesion's fringe (the ring between
its cut-off and the next peak), not a second lesion, and is dropped, as are rings touching a fringe. Each lesion gets its volume, longest axial diameter, centroid (LPS mm) and confidence;
the detection map holds each lesion's confidence on its voxels (what lesion-level AP is computed on).
`cascade.attenuation` then compares each lesion's attenuation with the rest of the gland.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial.distance import pdist

from PancreasAILib.cascade.calibration import LikelihoodCalibration, uncalibrated_likelihood
from PancreasAILib.cascade.grids import voxel_centres_mm

MIN_VOXELS = 10
RELATIVE_THRESHOLD = 2.5


@dataclass
class LesionCandidate:
    id: int
    confidence: float
    volume_ml: float
    longest_axial_diameter_mm: float
    centroid_mm: tuple[float, float, float]
    voxels: int
    network_confidence: float | None = None  # before `attenuation.weigh_by_attenuation`, when applied
    attenuation_hu: dict[str, float] | None = None  # mean HU minus the rest of the gland, per phase
    hypoattenuating: bool | None = None  # darker than the gland in at least one phase given


def extract_lesions(
    tumour_prob: np.ndarray,
    grid: sitk.Image,
    *,
    min_confidence: float = 0.1,
    min_voxels: int = MIN_VOXELS,
    max_lesions: int = 10,
    restrict: np.ndarray | None = None,
) -> tuple[list[LesionCandidate], np.ndarray, np.ndarray]:
    """Lesions (strongest first), the detection map (float32) and the lesion regions (int16: each
    lesion's id on its voxels, 0 elsewhere) of a probability on `grid`, all of its shape.

    `restrict`: an optional boolean mask (e.g. the dilated pancreas) outside which nothing is a lesion.
    """
    prob = np.asarray(tumour_prob, np.float32).copy()
    if restrict is not None:
        prob[~restrict] = 0.0
    detection = np.zeros_like(prob)
    regions_out = np.zeros(prob.shape, np.int16)
    claimed = np.zeros(prob.shape, bool)  # kept lesions and their fringes
    spacing_zyx = np.asarray(grid.GetSpacing())[::-1]
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    lesions: list[LesionCandidate] = []
    for _ in range(10 * max_lesions):  # each pass removes one region, kept or not
        if len(lesions) >= max_lesions:
            break
        peak_index = np.unravel_index(int(np.argmax(prob)), prob.shape)
        peak = float(prob[peak_index])
        if peak < min_confidence:
            break
        regions, _ = ndi.label(prob >= peak / RELATIVE_THRESHOLD)
        region = regions == regions[peak_index]
        prob[region] = 0.0
        count = int(region.sum())
        if count < min_voxels:
            continue
        fringe = touches(region, claimed)
        claimed |= region  # a fringe claims its own outer rings too
        if fringe:
            continue
        index = np.argwhere(region)
        centroid = voxel_centres_mm(grid, index.mean(axis=0, keepdims=True))[0]
        lesions.append(
            LesionCandidate(
                id=len(lesions) + 1,
                confidence=round(peak, 4),
                volume_ml=round(count * voxel_ml, 3),
                longest_axial_diameter_mm=round(longest_axial_diameter(region, spacing_zyx), 1),
                centroid_mm=tuple(round(float(v), 2) for v in centroid),
                voxels=count,
            )
        )
        detection[region] = peak
        regions_out[region] = len(lesions)
    return lesions, detection, regions_out


def touches(region: np.ndarray, other: np.ndarray) -> bool:
    """Whether `region` is face-adjacent to (or overlaps) `other`, looked at only around the region."""
    (box,) = ndi.find_objects(region.astype(np.uint8))
    grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
    return bool((ndi.binary_dilation(region[grown]) & other[grown]).any())


def longest_axial_diameter(mask: np.ndarray, spacing_zyx: np.ndarray) -> float:
    """The longest in-plane distance between two voxels of one axial slice (centre to centre, plus a voxel)."""
    best = 0.0
    for z in np.unique(np.nonzero(mask)[0]):
        points = np.argwhere(mask[z]) * spacing_zyx[1:]
        if len(points) > 400:  # the diameter lies on the outline: subsample the interior away
            edge = mask[z] & ~ndi.binary_erosion(mask[z])
            points = np.argwhere(edge) * spacing_zyx[1:]
        if len(points) >= 2:
            best = max(best, float(pdist(points).max()))
    return best + float(spacing_zyx[1:].mean()) if best or mask.any() else 0.0


def pdac_likelihood(
    classifier_probability: float,
    lesions: list[LesionCandidate],
    calibration: LikelihoodCalibration | None = None,
) -> float:
    """The patient-level score from the classification head and the strongest lesion's confidence.

    Calibrated when the stage-2 model ships a calibration; otherwise the plain mean of the two.
    """
    strongest = max((lesion.confidence for lesion in lesions), default=0.0)
    if calibration is None:
        return round(uncalibrated_likelihood(classifier_probability, strongest), 4)
    return round(calibration(classifier_probability, strongest), 4)
