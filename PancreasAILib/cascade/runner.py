"""The two-stage cascade on one aligned case: pancreas ROI, tumour network, lesions, back to the reference grid.

`Cascade.load()` reads both networks once (from the verified weight registry), so a batch of cases
reuses them. `Cascade.run()` takes the phases already on the reference grid and returns everything
in physical space: the label map on the reference grid, the lesions in LPS mm, the PDAC likelihood,
and the stage-2 box (HU, pancreas mask) that the anomaly heatmap works on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from PancreasAILib.cascade.attenuation import weigh_by_attenuation
from PancreasAILib.cascade.calibration import PhaseCalibrations
from PancreasAILib.cascade.gland_level import relative_to_gland
from PancreasAILib.cascade.grids import array_to_grid, grid_for_box, image_box, normalise_hu, resample_onto
from PancreasAILib.cascade.lesions import LesionCandidate, extract_lesions, pdac_likelihood
from PancreasAILib.cascade.predict import predict_stage1, predict_stage2
from PancreasAILib.cascade.settings import CascadeSettings, RunSettings
from PancreasAILib.cascade.spec import StageSpec
from PancreasAILib.cascade.vessels import bright_vessels, move_to_background
from PancreasAILib.geometry import box_region, mask_bounding_box, paste_into
from PancreasAILib.models.ensemble import ProbabilityAverage
from PancreasAILib.models.multiphase import MultiPhaseConfig, MultiPhaseTumourNet
from PancreasAILib.models.registry import ModelEntry, load_ensemble_weights, load_model_weights
from PancreasAILib.models.unet import CoarseUNet, CoarseUNetConfig
from PancreasAILib.phases import PHASE_ORDER, Phase, phase_channel
from PancreasAILib.progress import ProgressCallback, null_progress

STAGE1_MODEL, STAGE2_MODEL = "stage1_pancreas", "stage2_tumour"
MIN_PANCREAS_ML = 5.0  # a smaller "largest component" is noise, not a gland (PANORAMA glands: 22-112 mL)
RESTRICT_MARGIN_MM = 10.0


@dataclass
class CascadeResult:
    pancreas_found: bool
    reason: str | None
    labels: sitk.Image  # uint8 0/1/2 on the reference grid
    detection_map: sitk.Image | None  # float32 on the reference grid (each lesion's confidence)
    lesions: list[LesionCandidate] = field(default_factory=list)
    classifier_probability: float | None = None
    pdac_likelihood: float | None = None
    roi_grid: sitk.Image | None = None
    roi_hu: np.ndarray | None = None  # (P, Z, Y, X) HU on the ROI grid, PHASE_ORDER
    roi_gland: np.ndarray | None = None  # predicted pancreas incl. tumour on the ROI grid
    phase_mask: np.ndarray | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    likelihood_calibration: str | None = None  # phase key of the calibration used (None: uncalibrated)
    vessel_excluded_ml: float | None = None  # bright vessel taken out of the gland (None: step not run)
    gland_venous_median_hu: float | None = None  # the reference that step compared with


@dataclass
class Cascade:
    stage1: torch.nn.Module | Any  # or an external model with predict_probability()
    stage2: MultiPhaseTumourNet
    spec1: StageSpec
    spec2: StageSpec
    entries: list[ModelEntry]
    device: torch.device
    calibration: PhaseCalibrations | None = None
    # What this run uses of the release's registered choices or a run's overrides (`cascade.settings`)
    settings: RunSettings = field(default_factory=RunSettings)

    @classmethod
    def load(
        cls,
        device: str = "cpu",
        *,
        stage1: torch.nn.Module | Any | None = None,
        settings: CascadeSettings | None = None,
    ) -> Cascade:
        """Both networks from the registry; `stage1` may be replaced by an external pancreas model.

        A stage 1 registered as an ensemble (manifest `members`) runs as one network that averages
        its members' probabilities. `settings` overrides the registered inference choices (default:
        the release as registered; an external model always sees the scan as it is, and is grown
        only when the settings ask)."""
        dev = torch.device(device)
        entries = []
        external_stage1 = stage1 is not None
        if stage1 is None:
            states, entry1 = load_ensemble_weights(STAGE1_MODEL)
            stage1 = ProbabilityAverage([_coarse_unet(entry1.config, state) for state in states])
            entries.append(entry1)
            spec1 = StageSpec.from_dict(entry1.input_spec)
        else:
            spec1 = getattr(stage1, "spec", None) or StageSpec.from_dict(
                load_model_weights(STAGE1_MODEL)[1].input_spec
            )
            if getattr(stage1, "entry", None) is not None:  # an external model names itself in the report
                entries.append(stage1.entry)
        weights, entry2 = load_model_weights(STAGE2_MODEL)
        stage2 = MultiPhaseTumourNet(MultiPhaseConfig.from_dict(entry2.config))
        stage2.load_state_dict(weights)
        entries.append(entry2)
        for net in (stage1, stage2):
            if isinstance(net, torch.nn.Module):  # an external stage 1 places itself
                net.to(dev).eval()
        spec2 = StageSpec.from_dict(entry2.input_spec)
        resolved = (settings or CascadeSettings()).resolve(spec1, spec2, external_stage1=external_stage1)
        calibration = PhaseCalibrations.from_dict(entry2.calibration)
        return cls(stage1, stage2, spec1, spec2, entries, dev, calibration, resolved)

    def run(
        self,
        images: dict[Phase, sitk.Image],
        reference: sitk.Image,
        progress: ProgressCallback = null_progress,
    ) -> CascadeResult:
        timings: dict[str, float] = {}
        mask = np.array([p in images for p in PHASE_ORDER])
        start = time.perf_counter()
        progress("stage1", 0.0, "coarse pancreas")
        s1_grid = grid_for_box(image_box(reference), self.spec1.spacing)
        s1_prob = self.stage1_probability(images, s1_grid, mask)
        component = largest_component(s1_prob >= 0.5)
        volume_ml = float(component.sum() * np.prod(s1_grid.GetSpacing()) / 1000.0)
        grow = self.settings.stage1_grow_threshold
        if grow is not None:  # the check above stays on the confident core
            component = grow_component(component, s1_prob, grow)
        timings["stage1"] = time.perf_counter() - start
        progress("stage1", 1.0, f"pancreas {volume_ml:.0f} mL")
        empty = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
        empty.CopyInformation(reference)
        if volume_ml < MIN_PANCREAS_ML:
            reason = (
                f"stage 1 found no pancreas (largest candidate {volume_ml:.1f} mL < {MIN_PANCREAS_ML} mL); "
                "check that the scan covers the upper abdomen and is contrast CT"
            )
            return CascadeResult(False, reason, empty, None, phase_mask=mask, timings_s=timings)

        start = time.perf_counter()
        progress("stage2", 0.0, "tumour network")
        box = mask_bounding_box(array_to_grid(component.astype(np.uint8), s1_grid))
        assert box is not None
        roi = grid_for_box(
            box.expanded(self.spec2.roi_margin_mm), self.spec2.spacing, min_size=self.spec2.patch[::-1]
        )
        roi_hu = np.stack(
            [
                resample_onto(images[p], roi, default=-1024.0)
                if p in images
                else np.full(roi.GetSize()[::-1], -1024.0, np.float32)
                for p in PHASE_ORDER
            ]
        )
        prior_image = array_to_grid(np.where(component, s1_prob, 0.0).astype(np.float32), s1_grid)
        prior = resample_onto(prior_image, roi, smooth=False)
        # A stage 2 trained relative to the gland sees each phase shifted by stage 1's confident gland.
        stage2_hu = relative_to_gland(roi_hu, prior >= 0.5, mask, self.spec2.gland_reference_hu)
        network_input = normalise_hu(stage2_hu)
        network_input[~mask] = 0.0
        probs, classifier = predict_stage2(
            self.stage2,
            network_input,
            prior,
            mask,
            self.spec2.patch,
            self.device,
            mirror=self.settings.mirror,
        )
        timings["stage2"] = time.perf_counter() - start
        progress("stage2", 1.0, f"PDAC classifier {classifier:.2f}")

        start = time.perf_counter()
        progress("lesions", 0.0, "lesion candidates")
        scanned = inside_scan(reference, roi)  # the box may reach past the scan: no findings in padding
        probs[1:, ~scanned] = 0.0
        probs[0, ~scanned] = 1.0
        label_roi = probs.argmax(axis=0).astype(np.uint8)
        # The gland as the network drew it is what the tumour restriction, the lesions' attenuation
        # reference and the heatmap work on; the bright-vessel step below changes the label map only
        # (taking the vein out of the attenuation reference too cost venous-only lesion AP on the
        # calibration cases, 0.601 -> 0.578; model card).
        gland = label_roi > 0
        restrict = None
        if self.settings.restrict_to_pancreas:
            restrict = dilate_mm(largest_component(gland), roi.GetSpacing()[::-1], RESTRICT_MARGIN_MM)
        vessels = None
        margin = self.settings.vessel_margin_hu
        if margin is not None and mask[phase_channel(Phase.VENOUS)]:
            venous = roi_hu[phase_channel(Phase.VENOUS)]
            vessels = bright_vessels(venous, label_roi == 1, roi.GetSpacing()[::-1], margin)
            move_to_background(probs, vessels.mask)
        lesions, detection, regions = extract_lesions(probs[2], roi, restrict=restrict)
        lesions, detection = weigh_by_attenuation(
            lesions,
            regions,
            detection,
            roi_hu,
            mask,
            gland,
            self.settings.non_hypo_lesion_weight,
            self.settings.attenuation_ramp_hu,
        )
        labels = roi_to_reference(probs, roi, reference, restrict)
        detection_ref = paste_roi(array_to_grid(detection.astype(np.float32), roi), reference)
        timings["lesions"] = time.perf_counter() - start
        progress("lesions", 1.0, f"{len(lesions)} lesion(s)")
        calibration, calibration_key = self.calibration.select(images) if self.calibration else (None, None)
        return CascadeResult(
            True,
            None,
            labels,
            detection_ref,
            lesions,
            classifier,
            pdac_likelihood(classifier, lesions, calibration),
            roi,
            roi_hu,
            gland,
            mask,
            timings,
            calibration_key,
            None if vessels is None else round(vessels.volume_ml(roi.GetSpacing()[::-1]), 2),
            None if vessels is None else vessels.gland_median_hu,
        )

    def stage1_probability(
        self,
        images: dict[Phase, sitk.Image],
        grid: sitk.Image,
        mask: np.ndarray,
        scales: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Stage 1's pancreas probability on `grid` (public for analyses such as the scale probe).

        With `scales` (default: the cascade's `stage1_scales`) other than 1.0, the network also sees
        the scan magnified: sampled at its spacing divided by the scale, so a small patient looks like
        the bigger ones it was trained on; each probability comes back onto `grid` and they are
        averaged. Why: stage 1 misses most of the gland of a small held-out patient (AMOS 0013) at
        scale 1 and finds it at 1.4 (`benchmarks/stage1_scale_probe.py`); the shipped release keeps
        1.0 alone because no set of scales helped on average (`benchmarks/stage1_multiscale.py`,
        model card). An external segmenter brings its own handling of size and runs once."""
        predict = getattr(self.stage1, "predict_probability", None)
        if predict is not None:  # an external segmenter (nnU-Net, TotalSegmentator)
            return predict(self._stage1_input(images, grid), mask, grid)
        scales = self.settings.stage1_scales if scales is None else tuple(scales)
        total = np.zeros(grid.GetSize()[::-1], np.float32)
        for scale in scales:
            if scale == 1.0:
                total += self._stage1_network(images, grid, mask)
                continue
            magnified = grid_for_box(image_box(grid), np.asarray(grid.GetSpacing()) / scale)
            probability = self._stage1_network(images, magnified, mask)
            total += resample_onto(array_to_grid(probability, magnified), grid)
        return total / len(scales)

    def _stage1_input(self, images: dict[Phase, sitk.Image], grid: sitk.Image) -> np.ndarray:
        """The phases in HU on `grid` (P, Z, Y, X), zeros for a missing phase."""
        return np.stack(
            [
                resample_onto(images[p], grid, default=-1024.0)
                if p in images
                else np.zeros(grid.GetSize()[::-1], np.float32)
                for p in PHASE_ORDER
            ]
        )

    def _stage1_network(
        self, images: dict[Phase, sitk.Image], grid: sitk.Image, mask: np.ndarray
    ) -> np.ndarray:
        network_input = normalise_hu(self._stage1_input(images, grid))
        network_input[~mask] = 0.0
        return predict_stage1(self.stage1, network_input, mask, self.spec1.patch, self.device)


def _coarse_unet(config: dict[str, Any], state: dict[str, torch.Tensor]) -> CoarseUNet:
    net = CoarseUNet(CoarseUNetConfig.from_dict(config))
    net.load_state_dict(state)
    return net


def inside_scan(reference: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Which voxels of `grid` lie inside the scanned volume of `reference`."""
    ones = sitk.Image(reference.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(reference)
    return resample_onto(ones, grid, linear=False, pixel=sitk.sitkUInt8) > 0


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        return np.zeros(mask.shape, bool)
    sizes = ndi.sum_labels(np.ones(mask.shape), labels, index=np.arange(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def grow_component(core: np.ndarray, probability: np.ndarray, threshold: float) -> np.ndarray:
    """`core` with every region of `probability >= threshold` that touches it (hysteresis).

    Why: on anatomy it has not seen, stage 1 can be unsure of a whole tail or head (probability
    0.2-0.4) while sure of the rest; the stage-2 box around the confident core alone then cuts that
    part off, and stage 2 never sees it. Growing keeps the weak part connected to the gland, with
    its low probability as the prior, for stage 2 to decide."""
    labels, _ = ndi.label(probability >= threshold)
    touching = np.unique(labels[core])
    return core | np.isin(labels, touching[touching > 0])


def dilate_mm(mask: np.ndarray, spacing_zyx, margin_mm: float) -> np.ndarray:
    """Dilate by `margin_mm` with an ellipsoid that respects anisotropic voxels."""
    if not mask.any():
        return mask
    distance = ndi.distance_transform_edt(~mask, sampling=spacing_zyx)
    return distance <= margin_mm


def _reference_subgrid(roi: sitk.Image, reference: sitk.Image) -> sitk.Image | None:
    """The reference voxels inside the ROI's box, as an (empty) image of their geometry; None if none."""
    try:
        start, size = box_region(reference, image_box(roi))
    except ValueError:  # the ROI lies outside the scan
        return None
    sub = sitk.Image(size, sitk.sitkUInt8)
    sub.SetOrigin(reference.TransformIndexToPhysicalPoint(start))
    sub.SetSpacing(reference.GetSpacing())
    sub.SetDirection(reference.GetDirection())
    return sub


def paste_roi(image: sitk.Image, reference: sitk.Image, *, linear: bool = False) -> sitk.Image:
    """An ROI-grid image on the reference grid, computed only over the reference voxels inside the ROI."""
    sub = _reference_subgrid(image, reference)
    if sub is None:  # nothing to paste
        out = sitk.Image(reference.GetSize(), image.GetPixelID())
        out.CopyInformation(reference)
        return out
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    moved = sitk.Resample(image, sub, sitk.Transform(), interp, 0.0, image.GetPixelID())
    return paste_into(reference, moved)


def roi_to_reference(
    probs: np.ndarray, roi: sitk.Image, reference: sitk.Image, restrict: np.ndarray | None
) -> sitk.Image:
    """Labels on the reference grid from class probabilities interpolated there (smooth edges, not blocks).

    Decided on the reference voxels inside the ROI only: outside it every voxel is background, and a
    512 x 512 x 120 reference made the full-grid argmax the slowest step after the networks."""
    sub = _reference_subgrid(roi, reference)
    if sub is None:
        empty = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
        empty.CopyInformation(reference)
        return empty

    def onto_sub(array: np.ndarray, interpolator: int) -> np.ndarray:
        moved = sitk.Resample(array_to_grid(array, roi), sub, sitk.Transform(), interpolator, 0.0)
        return sitk.GetArrayFromImage(moved)  # a copy: a view would outlive its image

    pancreas, tumour = (onto_sub(p.astype(np.float32), sitk.sitkLinear) for p in probs[1:])
    labels = np.argmax(np.stack([1.0 - pancreas - tumour, pancreas, tumour]), axis=0).astype(np.uint8)
    if restrict is not None:
        allowed = onto_sub(restrict.astype(np.uint8), sitk.sitkNearestNeighbor)
        labels[(labels == 2) & (allowed == 0)] = 0
    patch = sitk.GetImageFromArray(labels)
    patch.CopyInformation(sub)
    return paste_into(reference, patch)
