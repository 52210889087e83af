"""Heatmap metrics: voxel AUROC inside the pancreas, Dice at a fixed threshold, slice accuracy.

AUROC is computed exactly from ranks (Mann-Whitney U, ties averaged), so it needs no threshold
and no binning, and is the probability that a tumour voxel scores above a pancreas voxel.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from PancreasAILib.evaluation.overlap import dice_score


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for boolean `labels`; NaN when one class is absent."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def case_metrics(heat: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC inside the true pancreas (tumour vs gland) and Dice of heat >= threshold vs the tumour."""
    inside = labels > 0
    tumour = labels == 2
    return {
        "auroc": auroc(heat[inside], tumour[inside]),
        "dice": dice_score(heat >= threshold, tumour),
        "peak_in_tumour": float(heat[tumour].max()) if tumour.any() else float("nan"),
    }
