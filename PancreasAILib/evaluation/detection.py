"""Lesion-level detection (PANORAMA / picai_eval conventions) and patient-level classification metrics.

Each true lesion (a connected component of the tumour label) is matched to the candidate of the
detection map with which it has the highest IoU, if that IoU reaches the threshold (0.10 for the
official PANORAMA scorer, 0.15 in its report). Other candidates that overlap a true lesion are
ignored, not counted as false positives; candidates that overlap none are false positives. Average
precision is the area under the resulting precision-recall curve, every true lesion in the recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

_FULL = ndi.generate_binary_structure(3, 3)


@dataclass
class LesionHits:
    """Scored candidates of one case: (confidence, is_true_positive), and how many true lesions it has."""

    scored: list[tuple[float, bool]]
    true_lesions: int


def match_lesions(detection: np.ndarray, truth_tumour: np.ndarray, iou_threshold: float) -> LesionHits:
    true_labels, n_true = ndi.label(truth_tumour, structure=_FULL)
    cand_labels, n_cand = ndi.label(detection > 0, structure=_FULL)
    # Work inside each candidate's bounding box: whole-volume label statistics are slow on 0.8 mm scans.
    boxes = ndi.find_objects(cand_labels)
    confidences = [float(detection[box][cand_labels[box] == c + 1].max()) for c, box in enumerate(boxes)]
    overlaps_truth = np.zeros(n_cand + 1, bool)
    pairs = []
    for t, true_box in enumerate(ndi.find_objects(true_labels), start=1):
        true_mask = true_labels[true_box] == t
        touching = np.unique(cand_labels[true_box][true_mask])
        for c in touching[touching > 0]:
            overlaps_truth[c] = True
            union_box = tuple(
                slice(min(a.start, b.start), max(a.stop, b.stop))
                for a, b in zip(true_box, boxes[c - 1], strict=True)
            )
            t_mask, c_mask = true_labels[union_box] == t, cand_labels[union_box] == c
            iou = np.logical_and(t_mask, c_mask).sum() / np.logical_or(t_mask, c_mask).sum()
            pairs.append((float(iou), t, int(c)))
    matched_true, matched_cand = set(), set()
    for iou, t, c in sorted(pairs, reverse=True):  # each true lesion takes its best still-free candidate
        if iou >= iou_threshold and t not in matched_true and c not in matched_cand:
            matched_true.add(t)
            matched_cand.add(c)
    scored = [(confidences[c - 1], True) for c in matched_cand]
    scored += [(confidences[c - 1], False) for c in range(1, n_cand + 1) if not overlaps_truth[c]]
    return LesionHits(scored, n_true)


def average_precision(hits: list[LesionHits]) -> float:
    """Area under the precision-recall curve over all cases' candidates (NaN without true lesions)."""
    total = sum(h.true_lesions for h in hits)
    if total == 0:
        return float("nan")
    scored = sorted((s for h in hits for s in h.scored), key=lambda s: -s[0])
    if not scored:
        return 0.0
    tp = np.cumsum([s[1] for s in scored])
    fp = np.cumsum([not s[1] for s in scored])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / total
    # Interpolated precision (the envelope), as in PASCAL VOC and picai_eval's PR curve.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half); NaN with a single class."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def sensitivity_specificity(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> tuple[float, float]:
    labels, predicted = np.asarray(labels, bool), np.asarray(scores, float) >= threshold
    sens = float(predicted[labels].mean()) if labels.any() else float("nan")
    spec = float((~predicted[~labels]).mean()) if (~labels).any() else float("nan")
    return sens, spec
