"""Evaluate a folder of predictions against ground truth: per-case metrics, summary with bootstrap 95 % CIs.

Predictions: `PRED/<case>/labels.nii.gz` (+ `detection_map.nii.gz`, `report.json` when written by
`pancreasai segment`). Ground truth: an nnU-Net-raw dataset (`GT/labelsTr/<case>.nii.gz`) or a folder
of `<case>.nii.gz` (0 background, 1 pancreas, 2 tumour). "Pancreas" is the whole gland (labels 1 and
2), as a radiologist outlines it; "tumour" is label 2 and is scored on cases that have one.

A synthetic dataset (`pancreasai synth`) draws its truth on the venous phase's anatomy and records how
each other phase was moved against it (`cases/<case>.json`, "misalignment"). A prediction made on
another reference phase (no venous phase given: its report says which) outlines that phase's
anatomy, so the truth is moved the same way before scoring; without this, arterial- or delayed-only
input would be scored against an outline a few millimetres off.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.errors import InputError
from PancreasAILib.evaluation.detection import (
    LesionHits,
    auroc,
    average_precision,
    match_lesions,
    sensitivity_specificity,
)
from PancreasAILib.evaluation.overlap import overlap_metrics
from PancreasAILib.phases import Phase
from PancreasAILib.synthesis.dataset import recorded_motions

IOU_THRESHOLDS = (0.10, 0.15)


@dataclass
class CaseMetrics:
    case: str
    has_tumour: bool
    pdac_score: float
    pancreas_dice: float
    pancreas_nsd: float
    pancreas_hd95_mm: float
    tumour_dice: float | None
    tumour_nsd: float | None
    tumour_hd95_mm: float | None
    false_tumour_ml: float  # predicted tumour volume on a case without one
    hits: dict[str, LesionHits] = field(default_factory=dict)


def _truth_path(gt_dir: Path, case: str) -> Path:
    for candidate in (
        gt_dir / "labelsTr" / f"{case}.nii.gz",
        gt_dir / "labelsTs" / f"{case}.nii.gz",
        gt_dir / f"{case}.nii.gz",
    ):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"No ground truth for case {case} in {gt_dir}.",
        "Point --gt at an nnU-Net-raw dataset (labelsTr/) or a folder of <case>.nii.gz.",
    )


def evaluate_case(
    pred_dir: Path, truth_file: Path, motions: dict[Phase, sitk.Transform] | None = None
) -> CaseMetrics:
    """Scores one prediction; `motions` (`recorded_motions` of a synthetic case) move the truth into
    the anatomy of the prediction's reference phase first (its report names it)."""
    pred_img = sitk.ReadImage(str(pred_dir / "labels.nii.gz"))
    truth_img = sitk.ReadImage(str(truth_file))
    report_file = pred_dir / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    reference = report.get("reference_phase")
    motion = (motions or {}).get(Phase(reference)) if reference else None
    if motion is not None:  # a point y of the moved anatomy shows what the truth has at motion⁻¹(y)
        truth_img = sitk.Resample(truth_img, pred_img, motion.GetInverse(), sitk.sitkNearestNeighbor, 0)
    # Compare in physical space: the truth is resampled onto the prediction's grid only if they differ.
    if (
        pred_img.GetSize() != truth_img.GetSize()
        or not np.allclose(pred_img.GetSpacing(), truth_img.GetSpacing())
        or not np.allclose(pred_img.GetOrigin(), truth_img.GetOrigin(), atol=1e-3)
        or not np.allclose(pred_img.GetDirection(), truth_img.GetDirection(), atol=1e-5)
    ):
        truth_img = sitk.Resample(truth_img, pred_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    pred, truth = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(truth_img)
    spacing = np.asarray(pred_img.GetSpacing())[::-1]
    gland = overlap_metrics(pred > 0, truth > 0, spacing)
    has_tumour = bool((truth == 2).any())
    tumour = overlap_metrics(pred == 2, truth == 2, spacing) if has_tumour else None
    detection_file = pred_dir / "detection_map.nii.gz"
    detection = (
        sitk.GetArrayFromImage(sitk.ReadImage(str(detection_file)))
        if detection_file.is_file()
        else ((pred == 2).astype(np.float32))
    )
    score = report.get("pdac_likelihood")
    if score is None:
        score = float(detection.max())
    return CaseMetrics(
        case=pred_dir.name,
        has_tumour=has_tumour,
        pdac_score=float(score),
        pancreas_dice=gland.dice,
        pancreas_nsd=gland.nsd,
        pancreas_hd95_mm=gland.hd95_mm,
        tumour_dice=tumour.dice if tumour else None,
        tumour_nsd=tumour.nsd if tumour else None,
        tumour_hd95_mm=tumour.hd95_mm if tumour else None,
        false_tumour_ml=0.0 if has_tumour else float((pred == 2).sum() * np.prod(spacing) / 1000.0),
        hits={f"{t:.2f}": match_lesions(detection, truth == 2, t) for t in IOU_THRESHOLDS},
    )


def summarise(cases: list[CaseMetrics]) -> dict[str, float]:
    def mean(values):
        values = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    labels = np.array([c.has_tumour for c in cases])
    scores = np.array([c.pdac_score for c in cases])
    sens, spec = sensitivity_specificity(labels, scores)
    out = {
        "pancreas_dice": mean(c.pancreas_dice for c in cases),
        "pancreas_nsd_2mm": mean(c.pancreas_nsd for c in cases),
        "pancreas_hd95_mm": mean(c.pancreas_hd95_mm for c in cases),
        "tumour_dice": mean(c.tumour_dice for c in cases if c.has_tumour),
        "tumour_nsd_2mm": mean(c.tumour_nsd for c in cases if c.has_tumour),
        "tumour_hd95_mm": mean(c.tumour_hd95_mm for c in cases if c.has_tumour),
        "auroc": auroc(labels, scores),
        "sensitivity": sens,
        "specificity": spec,
    }
    for key in cases[0].hits if cases else []:
        out[f"lesion_ap_iou{key}"] = average_precision([c.hits[key] for c in cases])
    return out


def bootstrap(
    cases: list[CaseMetrics], resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of every summary figure, resampling cases with replacement."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        sample = [cases[i] for i in rng.integers(len(cases), size=len(cases))]
        for key, value in summarise(sample).items():
            if np.isfinite(value):
                draws.setdefault(key, []).append(value)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items()}


def evaluate_folder(pred_root: Path, gt_root: Path, resamples: int = 1000) -> dict:
    case_dirs = (
        sorted(p for p in pred_root.iterdir() if (p / "labels.nii.gz").is_file())
        if pred_root.is_dir()
        else []
    )
    if not case_dirs:
        raise InputError(
            f"No predictions (<case>/labels.nii.gz) in {pred_root}.",
            "Run `pancreasai segment --batch ... --out PRED` first.",
        )
    cases = [
        evaluate_case(d, _truth_path(gt_root, d.name), recorded_motions(gt_root, d.name)) for d in case_dirs
    ]
    summary = summarise(cases)
    intervals = bootstrap(cases, resamples) if resamples else {}
    per_case = []
    for c in cases:
        row = {k: v for k, v in asdict(c).items() if k != "hits"}
        per_case.append(row)
    return {
        "cases": len(cases),
        "with_tumour": sum(c.has_tumour for c in cases),
        "summary": summary,
        "ci95": intervals,
        "per_case": per_case,
    }


def format_table(result: dict) -> str:
    rows = [
        f"{'metric':<22} {'value':>8}   95% CI   (n={result['cases']}, {result['with_tumour']} with tumour)"
    ]
    for key, value in result["summary"].items():
        low, high = result["ci95"].get(key, (float("nan"), float("nan")))
        rows.append(f"{key:<22} {value:8.3f}   [{low:.3f}, {high:.3f}]")
    return "\n".join(rows)
