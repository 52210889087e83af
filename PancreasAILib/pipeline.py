"""The case pipeline as separate, named stages with progress: load → align → (segment) → outputs.

Until the segmentation models land (issue 4) the segment stage reports `not_run` with its reason,
and the label map is empty: outputs never pretend to hold a prediction that was not made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.export import AlignmentInfo, GeometryInfo, OutputPaths, Report, write_case_outputs
from PancreasAILib.phases import PhaseSet
from PancreasAILib.progress import ProgressCallback, null_progress
from PancreasAILib.registration import AlignedCase, align_phase_set


@dataclass
class PipelineOptions:
    affine: bool = False
    overwrite: bool = False
    seed: int = 0


@dataclass
class CaseResult:
    aligned: AlignedCase
    report: Report
    outputs: OutputPaths
    timings_s: dict[str, float] = field(default_factory=dict)


def alignment_infos(aligned: AlignedCase) -> list[AlignmentInfo]:
    return [
        AlignmentInfo(phase=r.phase.value, method=r.method, metric="ncc", similarity_before=r.ncc_before,
                      similarity_after=r.ncc_after, translation_mm=tuple(r.translation_mm),
                      rotation_deg=r.rotation_deg, warning=r.warning)
        for r in aligned.alignments
    ]


def build_report(phase_set: PhaseSet, aligned: AlignedCase, timings: dict[str, float]) -> Report:
    warnings = list(phase_set.warnings) + [r.warning for r in aligned.alignments if r.warning]
    return Report(
        reference_phase=aligned.reference_phase.value,
        inputs={p.value: phase_set.series[p].info.to_report() for p in phase_set.phases},
        phases={p.value: phase_set.evidence[p].to_report() for p in phase_set.phases if p in phase_set.evidence},
        reference_geometry=GeometryInfo.from_image(aligned.reference),
        alignment=alignment_infos(aligned),
        segmentation_status="not_run",
        segmentation_reason="no segmentation model is installed yet (the cascade models arrive with issue 4)",
        timings_s={k: round(v, 3) for k, v in timings.items()},
        warnings=warnings,
    )


def run_case(phase_set: PhaseSet, out_dir: Path, options: PipelineOptions | None = None, *,
             progress: ProgressCallback = null_progress, truth: sitk.Image | None = None,
             title: str = "PancreasAI") -> CaseResult:
    """Align the phases and write the output contract for one case."""
    options = options or PipelineOptions()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    aligned = align_phase_set(phase_set, affine=options.affine, progress=progress, seed=options.seed)
    timings["align"] = time.perf_counter() - start
    labels = sitk.Image(aligned.reference.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(aligned.reference)
    progress("outputs", 0.0, "writing")
    start = time.perf_counter()
    report = build_report(phase_set, aligned, timings)
    reference_info = phase_set.series[aligned.reference_phase].info
    source_files = list(reference_info.dicom_files) if reference_info.kind == "dicom" else None
    outputs = write_case_outputs(out_dir, reference=aligned.reference, labels=labels, heatmap=None, report=report,
                                 images=aligned.images, source_dicom_files=source_files,
                                 overwrite=options.overwrite, title=title, truth=truth)
    timings["outputs"] = time.perf_counter() - start
    progress("outputs", 1.0, "done")
    return CaseResult(aligned=aligned, report=report, outputs=outputs, timings_s=timings)


def label_voxels(image: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))
