"""The patient-level PDAC likelihood: classification head and strongest lesion, calibrated.

Both inputs are maxima (the head's maximum over sliding windows, the strongest lesion's peak), so
their raw mean sits above 0.5 for almost every case and 0.5 means nothing. A two-feature logistic
regression on their logits, fitted on cases the networks were not selected on, turns them into a
probability whose 0.5 threshold separates cases; it ships beside the stage-2 weights in the
manifest (plain numbers, no code). Without a calibration the uncalibrated mean is used.

One fit cannot serve every subset of phases: with fewer phases both scores shift (the three-phase
fit of release 0.2.0 called every healthy delayed-only case positive), so `PhaseCalibrations` keeps
one fit per subset, and a subset without its own fit uses the three-phase fit and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from PancreasAILib.phases import PHASE_ORDER, Phase

EPS = 1e-4


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def uncalibrated_likelihood(head: float, strongest_lesion: float) -> float:
    return 0.5 * float(head) + 0.5 * float(strongest_lesion)


@dataclass(frozen=True)
class LikelihoodCalibration:
    """p = sigmoid(w_head * logit(head) + w_lesion * logit(strongest lesion) + bias)."""

    w_head: float
    w_lesion: float
    bias: float
    fitted_on: int = 0  # number of cases, for the record

    def __call__(self, head: float, strongest_lesion: float) -> float:
        z = self.w_head * logit(head) + self.w_lesion * logit(strongest_lesion) + self.bias
        return float(1.0 / (1.0 + np.exp(-z)))

    @classmethod
    def fit(
        cls, head: Sequence[float], lesion: Sequence[float], has_tumour: Sequence[bool], l2: float = 0.1
    ) -> LikelihoodCalibration:
        """Maximum-likelihood logistic regression with a small ridge (few cases), weights kept >= 0."""
        x = np.stack([logit(head), logit(lesion)], axis=1)
        y = np.asarray(has_tumour, np.float64)
        if len(y) < 4 or y.min() == y.max():
            raise ValueError("Calibration needs at least 4 cases, with and without tumour.")

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = x @ theta[:2] + theta[2]
            p = 1.0 / (1.0 + np.exp(-z))
            nll = np.sum(np.logaddexp(0.0, z) - y * z) + l2 * np.sum(theta[:2] ** 2)
            grad = np.concatenate([x.T @ (p - y) + 2 * l2 * theta[:2], [np.sum(p - y)]])
            return float(nll), grad

        # A higher head or lesion score must never lower the likelihood: weights bounded below by 0.
        result = minimize(
            loss,
            np.array([0.5, 0.5, 0.0]),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None), (0.0, None), (None, None)],
        )
        w_head, w_lesion, bias = (round(float(v), 5) for v in result.x)
        return cls(w_head, w_lesion, bias, fitted_on=len(y))

    def to_dict(self) -> dict[str, float | int]:
        return {
            "w_head": self.w_head,
            "w_lesion": self.w_lesion,
            "bias": self.bias,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LikelihoodCalibration | None:
        if not data:
            return None
        return cls(
            float(data["w_head"]), float(data["w_lesion"]), float(data["bias"]), int(data.get("fitted_on", 0))
        )


def phase_key(phases: Iterable[Phase | str]) -> str:
    """The manifest's name for a subset of phases, in PHASE_ORDER: e.g. "arterial+venous"."""
    names = {Phase(p).value for p in phases}
    if not names:
        raise ValueError("A calibration needs at least one phase.")
    return "+".join(p.value for p in PHASE_ORDER if p.value in names)


ALL_PHASES = phase_key(PHASE_ORDER)


def most_phases_first(key: str) -> tuple[int, str]:
    """Sort key for phase keys: three phases, then the pairs, then single phases."""
    return -key.count("+"), key


@dataclass(frozen=True)
class PhaseCalibrations:
    """The likelihood calibration of each subset of phases it was fitted on (keys from `phase_key`)."""

    by_phases: Mapping[str, LikelihoodCalibration] = field(default_factory=dict)

    def select(self, phases: Iterable[Phase | str]) -> tuple[LikelihoodCalibration | None, str | None]:
        """The fit for exactly these phases, else the three-phase fit; with the key of the one chosen."""
        key = phase_key(phases)
        for candidate in (key, ALL_PHASES):
            if candidate in self.by_phases:
                return self.by_phases[candidate], candidate
        return None, None

    def merged(self, newer: PhaseCalibrations) -> PhaseCalibrations:
        return PhaseCalibrations({**self.by_phases, **newer.by_phases})

    def to_dict(self) -> dict[str, dict[str, dict[str, float | int]]]:
        ordered = sorted(self.by_phases, key=most_phases_first)
        return {"by_phases": {k: self.by_phases[k].to_dict() for k in ordered}}

    @classmethod
    def from_dict(cls, data: dict) -> PhaseCalibrations | None:
        """Also reads the single fit of releases up to 0.2.0 (fitted on three-phase cases)."""
        if not data:
            return None
        if "by_phases" not in data:
            legacy = LikelihoodCalibration.from_dict(data)
            return cls({ALL_PHASES: legacy}) if legacy else None
        fits = {
            phase_key(k.split("+")): LikelihoodCalibration.from_dict(v) for k, v in data["by_phases"].items()
        }
        return cls({k: fit for k, fit in fits.items() if fit is not None}) if any(fits.values()) else None
