"""Calibration of the heatmap's normalisation floor and fixed threshold, on training anatomy only.

Held-out anatomy must not tune anything that is then reported on it, so both numbers are fitted
on validation cases synthesised from the training maps with a different seed:
- floor: the 99th percentile of the raw difference over tumour-free pancreas voxels, taken at the
  case where it is highest — a level healthy tissue (almost) never reaches;
- threshold: the one in 0.05 ... 0.95 with the best mean Dice over the validation cases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from PancreasAILib.anomaly.evaluation import Setting, raw_maps
from PancreasAILib.anomaly.heatmap import AnomalyModel
from PancreasAILib.anomaly.metrics import dice
from PancreasAILib.anomaly.weights import update_heatmap_settings
from PancreasAILib.training.anomaly_data import CacheSpec, build_cache, list_cases, load_cached_case


def fit_floor_and_threshold(raws: list[np.ndarray], labels: list[np.ndarray]) -> tuple[float, float, float]:
    """(floor, threshold, mean validation Dice) from raw (un-normalised) maps and their labels."""
    healthy = [
        np.percentile(r[lab == 1], 99) for r, lab in zip(raws, labels, strict=True) if (lab == 1).any()
    ]
    floor = float(max(healthy)) if healthy else 0.5
    best = (0.35, -1.0)
    for thr in np.arange(0.05, 0.951, 0.05):
        scores = []
        for r, lab in zip(raws, labels, strict=True):
            if not (lab == 2).any():
                continue
            heat = np.clip(r / max(float(r.max()), floor, 1e-6), 0, 1)
            scores.append(dice(heat >= thr, lab == 2))
        if scores and np.mean(scores) > best[1]:
            best = (float(round(thr, 2)), float(np.mean(scores)))
    return floor, best[0], best[1]


def calibrate_and_record(
    anatomy: Path,
    cache: Path,
    seed: int = 2001,
    cases: int = 10,
    setting: Setting | None = None,
    root: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Make validation cases from the training anatomy, fit floor and threshold, store them with the weights."""
    setting = setting or Setting()
    build_cache(CacheSpec(str(anatomy), "train", cases, seed=seed, p_tumour=1.0), cache)
    data = [load_cached_case(p) for p in list_cases(cache)[:cases]]
    model = AnomalyModel.load(root=root)
    model.defaults["floor"] = 0.0  # raw maps, scaled later
    results = raw_maps(model, data, setting)
    raws = [r.heatmap * r.raw_peak for r in results]  # undo the peak normalisation (floor 0 above)
    floor, threshold, val_dice = fit_floor_and_threshold(raws, [c.labels for c in data])
    settings = {
        "floor": round(floor, 4),
        "threshold": threshold,
        "noise_level": setting.noise_level,
        "guidance": setting.guidance,
        "steps": setting.steps,
        "calibration": {
            "cases": len(data),
            "seed": seed,
            "split": "train (validation seed)",
            "validation_dice": round(val_dice, 4),
        },
    }
    update_heatmap_settings(settings, root)
    log(
        f"calibrated on {len(data)} training-anatomy cases: floor {floor:.4f}, threshold {threshold:.2f} "
        f"(validation Dice {val_dice:.3f})"
    )
    return settings
