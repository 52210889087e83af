"""Quick attenuation landmarks for phase identification: the aorta and the liver, sampled in seconds.

When DICOM tags are silent (or the input is NIfTI) the contrast phase shows in the blood pool:
the aorta is brightest in the late-arterial phase, the liver and portal vein peak in the portal-venous
phase, and everything is washing out when delayed. Landmarks are found without a model, on a 3 mm
grid: the aorta as the most tube-like, round, homogeneous bright structure near the midline in
front of the spine, the liver as the largest homogeneous soft-tissue region on the patient's right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from PancreasAILib.geometry import resample_to_spacing, to_lps_axial

SAMPLING_SPACING_MM = 3.0


@dataclass
class Landmarks:
    """Median HU of the landmarks found (None when not found) and a few facts about how."""

    aorta_hu: float | None
    liver_hu: float | None
    aorta_radius_mm: float | None = None
    aorta_slices: int = 0
    body_hu: float | None = None


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """Largest connected region above -300 HU per volume, holes filled slice by slice."""
    mask = hu > -300
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    body = labels == (1 + int(np.argmax(sizes)))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def _local_std(hu: np.ndarray, size: int = 3) -> np.ndarray:
    mean = ndimage.uniform_filter(hu, size)
    mean_sq = ndimage.uniform_filter(hu * hu, size)
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def find_aorta(hu: np.ndarray, body: np.ndarray, spacing_mm: float) -> tuple[np.ndarray | None, float | None]:
    """The aortic lumen on an LPS-axial grid (z, y=posterior, x=left), or None.

    Candidates are homogeneous (local SD < 35 HU) voxels of 90-700 HU whose in-plane distance to the
    candidate border is 6-20 mm: a lumen, not a wall or a bowel fold. Each 3D component is scored by
    how long and tube-like it is and how close it lies to the midline just in front of the spine.
    """
    smooth = ndimage.median_filter(hu, size=(1, 3, 3))
    candidate = (smooth > 90) & (smooth < 700) & (_local_std(hu) < 35) & body
    distance = np.stack([ndimage.distance_transform_edt(c) for c in candidate]) * spacing_mm
    core = (distance >= 6.0) & (distance <= 20.0)
    labels, count = ndimage.label(core)
    if count == 0:
        return None, None
    _zs, ys, xs = np.nonzero(body)
    centre_x, centre_y = xs.mean(), ys.mean()
    half_width = max((xs.max() - xs.min()) / 2, 1)
    best_score, best_label = 0.0, 0
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        component = labels[region] == index
        slices_present = int(np.count_nonzero(component.any(axis=(1, 2))))
        area_mm2 = component.sum(axis=(1, 2))[component.any(axis=(1, 2))].mean() * spacing_mm**2
        radius = float(distance[region][component].max())
        # A tube: present on most slices, a core of roughly constant, aorta-like size.
        coverage = slices_present / body.shape[0]
        if radius > 20 or area_mm2 > 1500:
            continue
        _cz, cy, cx = ndimage.center_of_mass(component)
        cy += region[1].start
        cx += region[2].start
        midline = np.exp(-(((cx - centre_x) / (0.25 * half_width)) ** 2))
        posterior = 1.0 if cy > centre_y - 0.15 * half_width else 0.3  # dorsal half: in front of the spine
        score = coverage * midline * posterior * min(radius / 8.0, 1.0)
        if score > best_score:
            best_score, best_label = score, index
    if best_label == 0 or best_score < 0.05:
        return None, None
    core_mask = labels == best_label
    return core_mask, float(distance[core_mask].max())


def find_liver(hu: np.ndarray, body: np.ndarray, aorta: np.ndarray | None) -> np.ndarray | None:
    """The largest homogeneous soft-tissue region (40-220 HU) on the patient's right (x < centre)."""
    smooth = ndimage.median_filter(hu, size=(1, 3, 3))
    candidate = (smooth > 40) & (smooth < 220) & (_local_std(hu) < 25) & body
    if aorta is not None:
        candidate &= ~ndimage.binary_dilation(aorta, iterations=2)
    candidate = ndimage.binary_erosion(candidate, iterations=1)
    _, _, xs = np.nonzero(body)
    if xs.size == 0:
        return None
    right_side = np.zeros_like(candidate)
    right_side[:, :, : int(xs.mean())] = True  # LPS: low x is the patient's right
    labels, count = ndimage.label(candidate & right_side)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    best = int(np.argmax(sizes))
    if sizes[best] * SAMPLING_SPACING_MM**3 < 20_000:  # under 20 mL: not a liver
        return None
    return labels == best + 1


def measure_landmarks(image: sitk.Image) -> Landmarks:
    """Median HU in the aorta and the liver of a CT volume (any orientation), on a 3 mm grid."""
    small = resample_to_spacing(
        to_lps_axial(image), (SAMPLING_SPACING_MM,) * 3, interpolator=sitk.sitkLinear, default_value=-1024.0
    )
    hu = sitk.GetArrayFromImage(small).astype(np.float32)
    body = _body_mask(hu)
    aorta, radius = find_aorta(hu, body, SAMPLING_SPACING_MM)
    liver = find_liver(hu, body, aorta)
    return Landmarks(
        aorta_hu=float(np.median(hu[aorta])) if aorta is not None else None,
        liver_hu=float(np.median(hu[liver])) if liver is not None else None,
        aorta_radius_mm=radius,
        aorta_slices=int(aorta.any(axis=(1, 2)).sum()) if aorta is not None else 0,
        body_hu=float(np.median(hu[body])) if body.any() else None,
    )
