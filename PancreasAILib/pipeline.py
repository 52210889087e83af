"""The case pipeline as separate, named stages with progress: load → align → stage 1 → stage 2 → heatmap →
lesions → outputs.

Models are loaded once (`EngineModels.load`) and passed to every case, so a batch never reloads
them. When a model is not available the stage says so in the report (`segmentation_status`,
`heatmap.summary`) and the label map stays empty: outputs never pretend to hold a prediction that
was not made.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from PancreasAILib.cascade.attenuation import effective_weighting
from PancreasAILib.cascade.calibration import phase_key
from PancreasAILib.cascade.grids import array_to_grid
from PancreasAILib.cascade.runner import Cascade, CascadeResult, paste_roi
from PancreasAILib.cascade.settings import CascadeSettings
from PancreasAILib.dicom_read import hashed_key
from PancreasAILib.export import (
    AlignmentInfo,
    GeometryInfo,
    HeatmapInfo,
    Lesion,
    ModelInfo,
    OutputPaths,
    Report,
    VesselExclusionInfo,
    summarize_heatmap,
    write_case_outputs,
)
from PancreasAILib.phases import PHASE_ORDER, PhaseSet
from PancreasAILib.progress import ProgressCallback, null_progress
from PancreasAILib.registration import AlignedCase, AlignmentCache, align_phase_set

log = logging.getLogger(__name__)
DETECTION_MAP = "detection_map.nii.gz"


@dataclass
class PipelineOptions:
    affine: bool = False
    overwrite: bool = False
    seed: int = 0
    segment: bool = True
    heatmap: bool = True
    heatmap_settings: dict[str, Any] = field(default_factory=dict)  # noise_level, guidance, steps
    alignment_cache: AlignmentCache | None = None  # reuse registrations of identical images


@dataclass
class EngineModels:
    """The loaded networks, shared by all cases of a run. `anomaly` is None when the heatmap is off."""

    cascade: Cascade | None
    anomaly: Any | None = None  # PancreasAILib.anomaly.AnomalyModel
    device: str = "cpu"

    @classmethod
    def load(
        cls,
        device: str = "cpu",
        *,
        heatmap: bool = True,
        stage1: Any | None = None,
        settings: CascadeSettings | None = None,
    ) -> EngineModels:
        """The cascade (`settings`: a run's overrides of the registered choices) and, with `heatmap`,
        the anomaly models, loaded once for every case of a batch."""
        cascade = Cascade.load(device, stage1=stage1, settings=settings)
        anomaly = None
        if heatmap:
            from PancreasAILib.anomaly import AnomalyModel

            anomaly = AnomalyModel.load(device)
        return cls(cascade, anomaly, device)

    def model_infos(self) -> list[ModelInfo]:
        infos = [
            ModelInfo(m.name, m.version, m.sha256)  # each ensemble member by its own checksum
            for e in (self.cascade.entries if self.cascade else [])
            for m in e.member_entries()
        ]
        for entry in getattr(self.anomaly, "entries", []) or []:
            infos.append(ModelInfo(entry.name, entry.version, entry.sha256))
        return infos


@dataclass
class CaseResult:
    aligned: AlignedCase
    report: Report
    outputs: OutputPaths
    cascade: CascadeResult | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def alignment_infos(aligned: AlignedCase) -> list[AlignmentInfo]:
    return [
        AlignmentInfo(
            phase=r.phase.value,
            method=r.method,
            metric="ncc",
            similarity_before=r.ncc_before,
            similarity_after=r.ncc_after,
            translation_mm=tuple(r.translation_mm),
            rotation_deg=r.rotation_deg,
            warning=r.warning,
        )
        for r in aligned.alignments
    ]


def build_report(phase_set: PhaseSet, aligned: AlignedCase, timings: dict[str, float]) -> Report:
    warnings = list(phase_set.warnings) + [r.warning for r in aligned.alignments if r.warning]
    return Report(
        reference_phase=aligned.reference_phase.value,
        inputs={p.value: _without_file_name(phase_set.series[p].info.to_report()) for p in phase_set.phases},
        phases={
            p.value: phase_set.evidence[p].to_report() for p in phase_set.phases if p in phase_set.evidence
        },
        reference_geometry=GeometryInfo.from_image(aligned.reference),
        alignment=alignment_infos(aligned),
        segmentation_status="not_run",
        segmentation_reason="segmentation was switched off",
        timings_s={k: round(v, 3) for k, v in timings.items()},
        warnings=warnings,
    )


def _without_file_name(series: dict) -> dict:
    """report.json never names input files (a file name may be a patient's name): a salted hash instead."""
    name = series.pop("name", None)
    return {**series, "name": None, "file_key": hashed_key(name) if name else None}


def _fill_segmentation(report: Report, result: CascadeResult, models: EngineModels) -> None:
    report.models = models.model_infos()
    if not result.pancreas_found:
        report.segmentation_status = "no_pancreas"
        report.segmentation_reason = result.reason
        return
    report.segmentation_status = "done"
    report.segmentation_reason = None
    report.pdac_likelihood = result.pdac_likelihood
    report.pdac_classifier_probability = round(float(result.classifier_probability), 4)
    used = models.cascade.settings if models.cascade else None
    report.non_hypo_lesion_weight = used.non_hypo_lesion_weight if used else None
    report.attenuation_ramp_hu = used.attenuation_ramp_hu if used else None
    report.stage1_grow_threshold = used.stage1_grow_threshold if used else None
    if result.vessel_excluded_ml is not None:  # the step ran, so the cascade has a margin
        report.vessel_exclusion = VesselExclusionInfo(
            margin_hu=used.vessel_margin_hu,
            excluded_ml=result.vessel_excluded_ml,
            gland_venous_median_hu=(
                None if result.gland_venous_median_hu is None else round(result.gland_venous_median_hu, 1)
            ),
        )
    report.lesions = [
        Lesion(
            id=c.id,
            confidence=c.confidence,
            volume_ml=c.volume_ml,
            longest_axial_diameter_mm=c.longest_axial_diameter_mm,
            centroid_mm=c.centroid_mm,
            network_confidence=c.network_confidence,
            attenuation_hu=c.attenuation_hu,
            hypoattenuating=c.hypoattenuating,
        )
        for c in result.lesions
    ]
    report.notes.append(
        f"PDAC classification head {result.classifier_probability:.3f}; likelihood = "
        f"{_likelihood_method(result, models)}. Research use only, not for clinical use."
    )


def _likelihood_method(result: CascadeResult, models: EngineModels) -> str:
    """Which calibration made the likelihood, so a reader knows whether its 0.5 means anything."""
    key = result.likelihood_calibration
    if key is None or models.cascade is None or models.cascade.calibration is None:
        return "the mean of the head and the strongest lesion's confidence (uncalibrated)"
    fit = models.cascade.calibration.by_phases[key]
    how = (
        "a logistic calibration of the head and the strongest lesion's confidence, "
        f"fitted on {fit.fitted_on} cases with {key.replace('+', ', ')}"
    )
    present = phase_key(p for p, there in zip(PHASE_ORDER, result.phase_mask, strict=True) if there)
    if key != present:
        how += f" (none is fitted for {present.replace('+', ', ')}: read the likelihood as a ranking)"
    used, fitted = models.cascade.settings, models.cascade.spec2
    made = _weighting(used.non_hypo_lesion_weight, used.attenuation_ramp_hu)
    fitted_with = _weighting(fitted.non_hypo_lesion_weight, fitted.attenuation_ramp_hu)
    if made != fitted_with:
        how += (
            f" (fitted with non-hypo-attenuating lesions weighed by {fitted_with}, this run used {made}: "
            "read the likelihood as a ranking)"
        )
    return how


def _weighting(weight: float, ramp_hu: float) -> str:
    weight, ramp_hu = effective_weighting(weight, ramp_hu)
    return f"{weight:g}" if ramp_hu == 0 else f"{weight:g} graded over ±{ramp_hu:g} HU"


def _heatmap(
    result: CascadeResult, models: EngineModels, reference: sitk.Image, options: PipelineOptions
) -> tuple[sitk.Image | None, str | None]:
    if models.anomaly is None or not result.pancreas_found or result.roi_grid is None:
        return None, None
    spacing_zyx = tuple(float(v) for v in result.roi_grid.GetSpacing()[::-1])
    settings = {"seed": options.seed, **options.heatmap_settings}
    outcome = models.anomaly.heatmap(
        result.roi_hu, result.phase_mask, result.roi_gland, spacing_zyx, **settings
    )
    image = paste_roi(
        array_to_grid(np.asarray(outcome.heatmap, np.float32), result.roi_grid), reference, linear=True
    )
    detail = (
        f"DDIM L={outcome.settings.get('noise_level')} S={outcome.settings.get('guidance')} "
        f"steps={outcome.settings.get('steps')}, smoothed across slices (sigma "
        f"{outcome.settings.get('smooth_z_mm', 0.0):g} mm): {outcome.passes_per_slice} network passes per slice "
        f"in {outcome.seconds:.1f} s"
    )
    return sitk.Cast(image, sitk.sitkFloat32), detail


def run_case(
    phase_set: PhaseSet,
    out_dir: Path,
    options: PipelineOptions | None = None,
    *,
    models: EngineModels | None = None,
    progress: ProgressCallback = null_progress,
    truth: sitk.Image | None = None,
    title: str = "PancreasAI",
) -> CaseResult:
    """Align the phases, run the cascade and the heatmap when models are given, and write the outputs."""
    options = options or PipelineOptions()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    aligned = align_phase_set(
        phase_set, affine=options.affine, progress=progress, seed=options.seed, cache=options.alignment_cache
    )
    timings["align"] = time.perf_counter() - start
    report = build_report(phase_set, aligned, timings)
    labels = sitk.Image(aligned.reference.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(aligned.reference)
    heatmap = None
    cascade_result = None
    extra = {}
    if options.segment and models is not None and models.cascade is not None:
        cascade_result = models.cascade.run(aligned.images, aligned.reference, progress)
        timings.update(cascade_result.timings_s)
        labels = cascade_result.labels
        _fill_segmentation(report, cascade_result, models)
        if options.heatmap:
            start = time.perf_counter()
            progress("heatmap", 0.0, "diffusion anomaly map")
            heatmap, detail = _heatmap(cascade_result, models, aligned.reference, options)
            timings["heatmap"] = time.perf_counter() - start
            progress("heatmap", 1.0, detail or "skipped")
            if detail:
                report.notes.append(f"anomaly heatmap: {detail}")
        if cascade_result.detection_map is not None:
            detection = cascade_result.detection_map
            extra[DETECTION_MAP] = lambda p: sitk.WriteImage(detection, str(p), useCompression=True)
    elif options.segment:
        report.segmentation_reason = "no segmentation models were loaded"
    if heatmap is None and options.heatmap:
        report.heatmap = HeatmapInfo(
            summary="not computed: "
            + (
                "no pancreas was found"
                if cascade_result is not None and not cascade_result.pancreas_found
                else "the anomaly model is not loaded"
            )
        )
    elif heatmap is not None:
        report.heatmap = summarize_heatmap(heatmap, labels)
    progress("outputs", 0.0, "writing")
    start = time.perf_counter()
    report.timings_s = {k: round(v, 3) for k, v in timings.items()}
    reference_info = phase_set.series[aligned.reference_phase].info
    source_files = list(reference_info.dicom_files) if reference_info.kind == "dicom" else None
    outputs = write_case_outputs(
        out_dir,
        reference=aligned.reference,
        labels=labels,
        heatmap=heatmap,
        report=report,
        images=aligned.images,
        source_dicom_files=source_files,
        extra_files=extra,
        overwrite=options.overwrite,
        title=title,
        truth=truth,
    )
    timings["outputs"] = time.perf_counter() - start
    progress("outputs", 1.0, "done")
    return CaseResult(
        aligned=aligned, report=report, outputs=outputs, cascade=cascade_result, timings_s=timings
    )


def label_voxels(image: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))
