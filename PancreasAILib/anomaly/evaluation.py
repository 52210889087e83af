"""Evaluation of the heatmap on cached synthetic cases: one row of metrics per (L, S, steps, phases).

Each case is run exactly as the pipeline runs it (`AnomalyModel.heatmap` on the ROI), with the
synthetic truth pancreas-with-tumour mask standing in for the predicted one. Metrics per row:
mean per-case voxel AUROC inside the pancreas and the pooled AUROC over all cases' pancreas voxels,
mean Dice at the fixed threshold, seconds per case, network passes per slice; and once per model
the per-slice accuracy of the classifier on clean slices (image-level labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from PancreasAILib.anomaly.heatmap import AnomalyModel
from PancreasAILib.anomaly.metrics import auroc, case_metrics
from PancreasAILib.anomaly.preprocess import prepare_slices
from PancreasAILib.training.anomaly_data import CachedCase

PHASE_LETTERS = "avd"  # arterial, venous, delayed


@dataclass(frozen=True)
class Setting:
    noise_level: int = 250
    guidance: float = 8.0
    steps: int = 10
    phases: str = "avd"  # which phases are given to the model, e.g. "v" for venous only
    encoding: str = "ddim"  # or "noise" (seeded forward process instead of DDIM inversion)
    smooth_z_mm: float | None = None  # smoothing across slices; None: the calibrated one

    def phase_mask(self) -> np.ndarray:
        return np.array([c in self.phases for c in PHASE_LETTERS], dtype=bool)


def default_grid(defaults: dict | None = None) -> list[Setting]:
    """The table: the operating point (calibrated L, S, steps), the same without smoothing across
    slices when it has some, then L, S and steps varied one at a time (S = 0 and the reference's
    S = 8 included), then missing phases."""
    d = {"noise_level": 250, "guidance": 8.0, "steps": 10, "smooth_z_mm": 0.0, **(defaults or {})}
    L, S, n = int(d["noise_level"]), float(d["guidance"]), int(d["steps"])
    rows = [Setting(L, S, n)]
    rows += [Setting(L, S, n, smooth_z_mm=0.0)] if float(d["smooth_z_mm"]) > 0 else []
    rows += [Setting(level, S, n) for level in (150, 250, 350) if level != L]
    rows += [Setting(L, 0.0, n)]
    rows += [Setting(L, 8.0, n)] if S != 8.0 else [Setting(L, 3 * S, n)]
    rows += [Setting(L, S, 5), Setting(L, S, n, "v"), Setting(L, S, n, "av")]
    return list(dict.fromkeys(rows))


@dataclass
class Row:
    setting: Setting
    cases: int
    auroc_mean: float
    auroc_pooled: float
    dice_mean: float
    seconds_per_case: float
    passes_per_slice: int
    smooth_z_mm: float = 0.0  # the smoothing across slices used (the setting's, or the calibrated one)
    per_case: list[dict] = field(default_factory=list)  # anatomy, tumour_ml, auroc, dice of each case

    def to_dict(self) -> dict:
        return {**asdict(self.setting), **{k: v for k, v in asdict(self).items() if k != "setting"}}


# PDAC volume quartiles of 20 annotated PANORAMA cases (../shared/data/README.md): the size classes
# a synthetic tumour set is drawn from, so the heatmap's figures can be read per class.
SIZE_CLASS_EDGES_ML = (4.0, 6.7, 15.4)


def size_class(tumour_ml: float) -> str:
    lo = 0.0
    for hi in SIZE_CLASS_EDGES_ML:
        if tumour_ml < hi:
            return f"{lo:g}-{hi:g} mL"
        lo = hi
    return f">= {lo:g} mL"


def by_size_class(row: Row) -> list[dict]:
    """Mean AUROC and Dice of the row's tumour cases per PDAC size class (smallest first).

    Small, faint lesions are where a weakly supervised map fails first; a mean over all cases hides that.
    """
    order = [size_class(v) for v in (0.0, *SIZE_CLASS_EDGES_ML)]
    groups: dict[str, list[dict]] = {}
    for case in row.per_case:
        groups.setdefault(size_class(case["tumour_ml"]), []).append(case)
    return [
        {
            "size": name,
            "cases": len(groups[name]),
            "auroc_mean": float(np.nanmean([c["auroc"] for c in groups[name]])),
            "dice_mean": float(np.mean([c["dice"] for c in groups[name]])),
        }
        for name in order
        if name in groups
    ]


def format_size_table(row: Row) -> str:
    lines = ["| tumour volume | cases | AUROC (mean) | Dice |", "|---|---|---|---|"]
    lines += [
        f"| {g['size']} | {g['cases']} | {g['auroc_mean']:.3f} | {g['dice_mean']:.3f} |"
        for g in by_size_class(row)
    ]
    return "\n".join(lines)


def raw_maps(
    model: AnomalyModel,
    cases: Sequence[CachedCase],
    setting: Setting,
) -> list:
    """HeatmapResults of every case for one setting, each on its own cached grid."""
    return [
        model.heatmap(
            c.roi_hu,
            setting.phase_mask(),
            c.labels > 0,
            c.spacing_zyx,
            noise_level=setting.noise_level,
            guidance=setting.guidance,
            steps=setting.steps,
            encoding=setting.encoding,
            smooth_z_mm=setting.smooth_z_mm,
        )
        for c in cases
    ]


def evaluate_setting(
    model: AnomalyModel, cases: Sequence[CachedCase], setting: Setting, threshold: float
) -> Row:
    results = raw_maps(model, cases, setting)
    per_case = [case_metrics(r.heatmap, c.labels, threshold) for r, c in zip(results, cases, strict=True)]
    tumour_cases = [m for m, c in zip(per_case, cases, strict=True) if (c.labels == 2).any()]
    details = [
        {
            "anatomy": c.meta.get("anatomy", ""),
            "tumour_ml": round(float((c.labels == 2).sum()) * float(np.prod(c.spacing_zyx)) / 1000.0, 2),
            "auroc": round(m["auroc"], 4),
            "dice": round(m["dice"], 4),
        }
        for m, c in zip(per_case, cases, strict=True)
        if (c.labels == 2).any()
    ]
    scores = np.concatenate([r.heatmap[c.labels > 0] for r, c in zip(results, cases, strict=True)])
    truth = np.concatenate([c.labels[c.labels > 0] == 2 for c in cases])
    return Row(
        setting=setting,
        cases=len(tumour_cases),
        auroc_mean=float(np.nanmean([m["auroc"] for m in tumour_cases])),
        auroc_pooled=auroc(scores, truth),
        dice_mean=float(np.mean([m["dice"] for m in tumour_cases])),
        seconds_per_case=float(np.mean([r.seconds for r in results])),
        passes_per_slice=results[0].passes_per_slice,
        smooth_z_mm=float(results[0].settings["smooth_z_mm"]),
        per_case=details,
    )


@torch.no_grad()
def slice_accuracy(model: AnomalyModel, cases: Sequence[CachedCase]) -> dict[str, float]:
    """Accuracy of the classifier (t = 0, all phases) at telling slices with tumour from those without."""
    correct, total, pos = 0, 0, 0
    for case in cases:
        batch = prepare_slices(
            case.roi_hu,
            np.ones(3, bool),
            case.labels > 0,
            case.spacing_zyx,
            model.spec,
            extra=(case.labels == 2).astype(np.float32),
        )
        if batch.empty:
            continue
        labels = (batch.extra > 0.5).flatten(1).sum(1) >= model.spec.min_tumour_px
        pm = torch.ones(batch.x.shape[0], 3)
        logits = model.classifier(
            batch.x.to(model.device),
            torch.zeros(len(labels), dtype=torch.long, device=model.device),
            pm.to(model.device),
            batch.region.to(model.device),
        ).cpu()
        correct += int(((logits > 0) == labels).sum())
        total += len(labels)
        pos += int(labels.sum())
    return {"slice_accuracy": correct / max(total, 1), "slices": total, "tumour_slices": pos}


def format_table(rows: Sequence[Row], threshold: float) -> str:
    """A Markdown table of the rows."""
    head = (
        "| L | S | steps | phases | encoding | z smoothing (mm) | cases | AUROC (mean per case) | "
        f"AUROC (pooled) | Dice @ {threshold:.2f} | s / case | passes / slice (ref. 2L) |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        s = r.setting
        lines.append(
            f"| {s.noise_level} | {s.guidance:g} | {s.steps} | {s.phases} | {s.encoding} | {r.smooth_z_mm:g} | "
            f"{r.cases} | {r.auroc_mean:.3f} | "
            f"{r.auroc_pooled:.3f} | {r.dice_mean:.3f} | {r.seconds_per_case:.1f} | "
            f"{r.passes_per_slice} ({2 * s.noise_level}) |"
        )
    return "\n".join(lines)


def run_grid(
    model: AnomalyModel,
    cases: Sequence[CachedCase],
    grid: Sequence[Setting],
    threshold: float,
    log: Callable[[str], None] = print,
) -> list[Row]:
    rows = []
    for setting in grid:
        row = evaluate_setting(model, cases, setting, threshold)
        log(
            f"L={setting.noise_level} S={setting.guidance:g} steps={setting.steps} phases={setting.phases} "
            f"z smoothing {row.smooth_z_mm:g} mm: "
            f"AUROC {row.auroc_mean:.3f} (pooled {row.auroc_pooled:.3f}), Dice {row.dice_mean:.3f}, "
            f"{row.seconds_per_case:.1f} s/case"
        )
        rows.append(row)
    return rows
