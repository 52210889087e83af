"""Keep the enhanced veins out of the gland: bright tissue that continues outside it is vessel.

In the portal-venous phase the portal, superior mesenteric and splenic veins are far brighter than
the pancreas (about 160-200 HU against 90-130 HU), and they run along the gland's back and through
its neck. Stage 2 labels long stretches of them as pancreas on anatomy it has not seen (held-out
synthetic cases: 13-19 mL of vein inside a 57-80 mL gland, `benchmarks/gland_errors.py` and the
model card), although they are 80 HU brighter than the gland in that very phase. The network
follows the stage-1 prior's extent there; this step applies what a radiologist sees.

Rule, venous phase only (in the arterial phase the veins are about as bright as the enhancing
gland, and a hyper-enhancing lesion, such as a neuroendocrine tumour, is brightest there):
- the HU is smoothed a little (Gaussian, 1 mm) so that noise alone does not cross the margin;
- the reference is the median HU of the voxels labelled pancreas (not tumour);
- a voxel is vessel when it is brighter than that by `margin_hu`, and the bright region it belongs
  to also reaches outside the gland: a vein continues beyond the pancreas, while a bright spot
  enclosed by the gland (a calcification, a hyper-enhancing lesion) stays gland for the reader;
- tumour voxels are never changed (PDAC is not brighter than the gland).

Nothing happens without a venous phase, on too little gland for a reference, or when no region is
that much brighter (a scan with poor venous enhancement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

MIN_GLAND_VOXELS = 50  # fewer voxels labelled pancreas: no reliable reference
SMOOTHING_MM = 1.0


@dataclass(frozen=True)
class VesselExclusion:
    """What the step took out of the gland (`mask`: on the grid it was given)."""

    mask: np.ndarray
    margin_hu: float
    gland_median_hu: float | None  # venous-phase median of the gland it compared with

    def volume_ml(self, spacing_zyx) -> float:
        return float(self.mask.sum() * np.prod(spacing_zyx) / 1000.0)


def check_margin(margin_hu: float) -> float:
    """The margin must be a positive number of HU; returns it."""
    if not margin_hu > 0:
        raise ValueError(f"the bright-vessel margin must be a positive number of HU, got {margin_hu}")
    return float(margin_hu)


def bright_vessels(
    venous_hu: np.ndarray, pancreas: np.ndarray, spacing_zyx, margin_hu: float
) -> VesselExclusion:
    """The voxels of `pancreas` (labelled pancreas, not tumour) that are enhanced vessel.

    `venous_hu`: the venous phase on the same grid; `spacing_zyx` in mm.
    """
    check_margin(margin_hu)
    none = np.zeros(pancreas.shape, bool)
    if pancreas.sum() < MIN_GLAND_VOXELS:
        return VesselExclusion(none, margin_hu, None)
    sigma = SMOOTHING_MM / np.asarray(spacing_zyx, float)
    smooth = ndi.gaussian_filter(venous_hu.astype(np.float32), sigma=sigma)
    median = float(np.median(smooth[pancreas]))
    bright = smooth > median + margin_hu
    if not (bright & pancreas).any():
        return VesselExclusion(none, margin_hu, median)
    components, _ = ndi.label(bright)
    inside = np.unique(components[bright & pancreas])
    outside = np.unique(components[bright & ~pancreas])
    continuing = np.intersect1d(inside, outside)
    vessel = np.isin(components, continuing[continuing > 0]) & pancreas
    return VesselExclusion(vessel, margin_hu, median)


def move_to_background(probs: np.ndarray, vessel: np.ndarray) -> None:
    """Give the pancreas probability of `vessel` voxels to the background (in place), so that the
    labels interpolated onto the reference grid leave them out with smooth edges."""
    probs[0][vessel] += probs[1][vessel]
    probs[1][vessel] = 0.0
