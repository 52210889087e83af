"""Identify the contrast phase of each series, with evidence and a confidence the user can check.

Three kinds of evidence, combined as log-scores per phase:
1. keywords in SeriesDescription / ProtocolName (strongest: the scanner protocol named it);
2. attenuation of the aorta and liver (works for NIfTI and silent tags; see `attenuation`);
3. acquisition-time order among the contrast series of one study (arterial first, delayed last).
Unenhanced series are recognised and reported, never assigned a contrast phase.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from PancreasAILib.attenuation import Landmarks, measure_landmarks
from PancreasAILib.phases import PHASE_ORDER, LoadedSeries, Phase, PhaseEvidence

_KEYWORDS: dict[str, tuple[str, ...]] = {
    Phase.ARTERIAL.value: (
        "arterial",
        "arteriell",
        "arteriale",
        "art",
        "pancreatic",
        "pankreas",
        "ap",
        "lap",
        "late arterial",
        "cta",
        "angio",
        "early",
    ),
    Phase.VENOUS.value: (
        "portal",
        "venous",
        "venös",
        "venos",
        "portalvenous",
        "pv",
        "pvp",
        "vp",
        "portovenous",
        "portal venous",
        "venoes",
    ),
    Phase.DELAYED.value: (
        "delayed",
        "late",
        "equilibrium",
        "eq",
        "spät",
        "spaet",
        "excretory",
        "5min",
        "3min",
        "urographic",
    ),
    "unenhanced": (
        "native",
        "nativ",
        "non contrast",
        "noncontrast",
        "non-contrast",
        "unenhanced",
        "plain",
        "nc",
        "pre contrast",
        "precontrast",
        "ohne km",
        "sine",
    ),
}
# Phrases that contain another phase's keyword but mean something else.
_OVERRIDES = {"late arterial": Phase.ARTERIAL.value}

# Literature attenuation (HU): aorta and liver per phase (shared/data/README.md), compared in log HU
# because enhancement scales with dose and cardiac output.
_PROTOTYPES = {
    Phase.ARTERIAL.value: (300.0, 75.0),
    Phase.VENOUS.value: (160.0, 105.0),
    Phase.DELAYED.value: (110.0, 85.0),
    "unenhanced": (40.0, 55.0),
}
_LOG_SD_AORTA = 0.22
_LOG_SD_LIVER = 0.18
KEYWORD_WEIGHT = 6.0
TIME_ORDER_WEIGHT = 1.5
ATTENUATION_FLOOR = 4.0


def _tokens(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9äöü]+", " ", text.lower()).strip() + " "


def keyword_scores(*texts: str | None) -> tuple[dict[str, float], list[str]]:
    """Phase scores from protocol keywords, and the words that matched."""
    joined = _tokens(" ".join(t for t in texts if t))
    scores = {name: 0.0 for name in _KEYWORDS}
    found: list[str] = []
    for phrase, name in _OVERRIDES.items():
        if f" {phrase} " in joined:
            scores[name] += KEYWORD_WEIGHT
            found.append(phrase)
            joined = joined.replace(f" {phrase} ", " ")
    for name, words in _KEYWORDS.items():
        for word in words:
            if f" {word} " in joined:
                scores[name] += KEYWORD_WEIGHT
                found.append(word)
                break
    return scores, found


def attenuation_scores(landmarks: Landmarks) -> tuple[dict[str, float], list[str]]:
    """Log-likelihood of each phase from aorta and liver HU (Gaussian in log HU)."""
    scores = {name: 0.0 for name in _PROTOTYPES}
    evidence: list[str] = []
    if landmarks.aorta_hu is None:
        return scores, ["aorta not found: attenuation evidence unavailable"]
    aorta = max(landmarks.aorta_hu, 5.0)
    for name, (proto_aorta, proto_liver) in _PROTOTYPES.items():
        scores[name] = -0.5 * ((math.log(aorta) - math.log(proto_aorta)) / _LOG_SD_AORTA) ** 2
        if landmarks.liver_hu is not None:
            liver = max(landmarks.liver_hu, 5.0)
            scores[name] += -0.5 * ((math.log(liver) - math.log(proto_liver)) / _LOG_SD_LIVER) ** 2
    # Bounded, so a landmark picked wrongly cannot outvote a phase the scanner protocol names.
    scores = {name: max(value, -ATTENUATION_FLOOR) for name, value in scores.items()}
    evidence.append(f"aorta {landmarks.aorta_hu:.0f} HU")
    if landmarks.liver_hu is not None:
        evidence.append(f"liver {landmarks.liver_hu:.0f} HU")
    return scores, evidence


def _softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def identify_phases(series: Sequence[LoadedSeries], *, use_attenuation: bool = True) -> list[PhaseEvidence]:
    """One `PhaseEvidence` per series, in input order."""
    partial: list[tuple[dict[str, float], list[str]]] = []
    for item in series:
        info = item.info
        scores, words = keyword_scores(info.series_description, info.protocol_name)
        evidence = [f"tag keywords: {', '.join(words)}"] if words else []
        if info.contrast_agent:
            scores["unenhanced"] -= KEYWORD_WEIGHT / 2
            evidence.append("ContrastBolusAgent recorded")
        if use_attenuation:
            landmarks = measure_landmarks(item.image)
            att_scores, att_evidence = attenuation_scores(landmarks)
            for name, value in att_scores.items():
                scores[name] += value
            evidence.append("attenuation: " + ", ".join(att_evidence))
        partial.append((scores, evidence))
    _add_time_order(series, partial)
    results = []
    for scores, evidence in partial:
        probabilities = _softmax(scores)
        best = max(probabilities, key=probabilities.get)
        phase = None if best == "unenhanced" else Phase(best)
        if phase is None:
            evidence.append("looks unenhanced (no contrast): not usable as a contrast phase")
        results.append(
            PhaseEvidence(
                phase=phase, confidence=probabilities[best], evidence=evidence, scores=probabilities
            )
        )
    return results


def _add_time_order(
    series: Sequence[LoadedSeries], partial: list[tuple[dict[str, float], list[str]]]
) -> None:
    """With several timed series of one study, earlier favours arterial and later delayed."""
    timed = [
        (i, s.info.acquisition_time_s)
        for i, s in enumerate(series)
        if s.info.acquisition_time_s is not None and partial[i][0]["unenhanced"] <= 0
    ]
    studies = {s.info.study_key for s in series}
    if len(timed) < 2 or len(studies) > 1:
        return
    timed.sort(key=lambda pair: pair[1])
    for rank, (index, _) in enumerate(timed):
        position = rank / (len(timed) - 1)  # 0 first, 1 last
        scores, evidence = partial[index]
        for k, phase in enumerate(PHASE_ORDER):
            expected = k / (len(PHASE_ORDER) - 1)
            scores[phase.value] -= TIME_ORDER_WEIGHT * abs(position - expected)
        evidence.append(f"acquired {rank + 1} of {len(timed)} in time")
