"""Calibration of the heatmap's guidance scale (and optionally its noise level), its smoothing across
slices, normalisation floor and fixed threshold, on training anatomy only.

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
from PancreasAILib.anomaly.heatmap import AnomalyModel, smooth_across_slices
from PancreasAILib.anomaly.metrics import auroc
from PancreasAILib.anomaly.weights import SMOOTH_Z_CANDIDATES_MM, update_heatmap_settings
from PancreasAILib.evaluation.overlap import dice_score
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
            scores.append(dice_score(heat >= thr, lab == 2))
        if scores and np.mean(scores) > best[1]:
            best = (float(round(thr, 2)), float(np.mean(scores)))
    return floor, best[0], best[1]


def calibrate_and_record(
    anatomy: Path,
    cache: Path,
    seed: int = 2001,
    cases: int = 16,
    guidances: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0),
    noise_levels: tuple[int, ...] | None = None,
    smooth_mm: float = 4.0,
    smooth_z_mm: tuple[float, ...] = SMOOTH_Z_CANDIDATES_MM,
    base: Setting | None = None,
    root: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Make validation cases from the training anatomy, choose the guidance scale, noise level and
    smoothing across slices (best mean AUROC; the noise level stays `base`'s unless `noise_levels`
    are given), fit floor and threshold there, and store them with the weights.

    The smoothing across slices is applied to the same reconstructions, so trying several costs
    no network passes.

    The guidance scale must be chosen per trained classifier: S multiplies the classifier's gradient,
    whose size depends on its architecture and pooling, so the reference's S = 5-10 does not carry over.
    """
    base = base or Setting()
    build_cache(CacheSpec(str(anatomy), "train", cases, seed=seed, dr_fraction=0.0, p_tumour=1.0), cache)
    data = [load_cached_case(p) for p in list_cases(cache)[:cases]]
    labels = [c.labels for c in data]
    model = AnomalyModel.load(root=root)
    model.defaults["floor"] = 0.0  # raw maps, scaled later
    model.defaults["smooth_mm"] = smooth_mm
    noise_levels = tuple(noise_levels or (base.noise_level,))
    best: tuple[float, Setting, float, list] = (-1.0, base, 0.0, [])
    by_setting: dict[str, float] = {}
    for noise_level in noise_levels:
        for guidance in guidances:
            setting = Setting(noise_level, guidance, base.steps, smooth_z_mm=0.0)
            results = raw_maps(model, data, setting)
            for sigma in smooth_z_mm:
                # r.heatmap * r.raw_peak undoes the peak normalisation (floor 0 above)
                raws = [
                    smooth_across_slices(r.heatmap * r.raw_peak, r.region, sigma, float(c.spacing_zyx[0]))
                    for r, c in zip(results, data, strict=True)
                ]
                score = float(
                    np.nanmean(
                        [auroc(r[lab > 0], lab[lab > 0] == 2) for r, lab in zip(raws, labels, strict=True)]
                    )
                )
                name = f"L={noise_level} S={guidance:g} z={sigma:g}mm"
                by_setting[name] = round(score, 4)
                log(f"validation {name}: mean AUROC {score:.3f}")
                if score > best[0]:
                    best = (score, setting, sigma, raws)
    val_auroc, chosen, chosen_z, raws = best
    floor, threshold, val_dice = fit_floor_and_threshold(raws, labels)
    settings = {
        "floor": round(floor, 4),
        "threshold": threshold,
        "noise_level": chosen.noise_level,
        "guidance": chosen.guidance,
        "steps": base.steps,
        "smooth_mm": smooth_mm,
        "smooth_z_mm": chosen_z,
        "calibration": {
            "cases": len(data),
            "seed": seed,
            "split": "train anatomy (validation seed)",
            "guidances_tried": list(guidances),
            "noise_levels_tried": list(noise_levels),
            "smooth_z_mm_tried": list(smooth_z_mm),
            "validation_auroc_by_setting": by_setting,
            "validation_auroc": round(val_auroc, 4),
            "validation_dice": round(val_dice, 4),
        },
    }
    update_heatmap_settings(settings, root)
    log(
        f"calibrated on {len(data)} training-anatomy cases: L {chosen.noise_level}, S {chosen.guidance:g}, "
        f"smoothing across slices {chosen_z:g} mm, "
        f"floor {floor:.4f}, threshold {threshold:.2f} (validation AUROC {val_auroc:.3f}, Dice {val_dice:.3f})"
    )
    return settings
