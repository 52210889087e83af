"""Contrast phases and the `PhaseSet`: the images of one case with exact geometry and provenance.

A case is any non-empty subset of {arterial, venous, delayed}. Channel order everywhere (datasets,
networks, files `_0000/_0001/_0002`) is `PHASE_ORDER`; venous is the reference grid when present
because it shows pancreas, vessels and tumour margins best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import SimpleITK as sitk


class Phase(str, Enum):
    ARTERIAL = "arterial"  # late-arterial / pancreatic phase (~35-45 s)
    VENOUS = "venous"  # portal-venous phase (~65-75 s)
    DELAYED = "delayed"  # delayed / equilibrium phase (~3-5 min)

    def __str__(self) -> str:
        return self.value


PHASE_ORDER: tuple[Phase, ...] = (Phase.ARTERIAL, Phase.VENOUS, Phase.DELAYED)
REFERENCE_PREFERENCE: tuple[Phase, ...] = (Phase.VENOUS, Phase.ARTERIAL, Phase.DELAYED)


def phase_channel(phase: Phase) -> int:
    """nnU-Net/MSD channel index of a phase (`_0000` arterial, `_0001` venous, `_0002` delayed)."""
    return PHASE_ORDER.index(phase)


@dataclass(frozen=True)
class SeriesInfo:
    """Non-PHI facts about one input series, safe to log and to put in reports.

    Patient and study identifiers are kept only as salted hashes (`patient_key`, `study_key`) so that
    inputs can be compared for consistency without ever writing the identifiers themselves.
    """

    source: Path
    kind: str  # "dicom" or "file"
    modality: str | None = None
    series_description: str | None = None
    protocol_name: str | None = None
    contrast_agent: str | None = None
    acquisition_time_s: float | None = None  # seconds after midnight
    patient_key: str | None = None
    study_key: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    num_slices: int = 0
    dicom_files: tuple[Path, ...] = ()  # sorted by slice position (for DICOM SEG references)

    def to_report(self) -> dict:
        """The report form: no paths of DICOM files, no identifiers beyond hashes."""
        return {
            "kind": self.kind,
            "name": self.source.name if self.kind == "file" else None,
            "modality": self.modality,
            "series_description": self.series_description,
            "protocol_name": self.protocol_name,
            "contrast_agent_recorded": bool(self.contrast_agent),
            "acquisition_time_s": self.acquisition_time_s,
            "patient_key": self.patient_key,
            "study_key": self.study_key,
            "num_slices": self.num_slices,
        }


@dataclass
class PhaseEvidence:
    """Why a series was assigned to a phase, and how sure that is (0..1)."""

    phase: Phase | None
    confidence: float
    evidence: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    overridden: bool = False

    def to_report(self) -> dict:
        return {
            "phase": self.phase.value if self.phase else None,
            "confidence": round(self.confidence, 3),
            "evidence": list(self.evidence),
            "scores": {k: round(v, 3) for k, v in self.scores.items()},
            "overridden_by_user": self.overridden,
        }


@dataclass
class LoadedSeries:
    """One image in HU (float32 SimpleITK image, LPS physical space) with its provenance."""

    image: sitk.Image
    info: SeriesInfo


@dataclass
class PhaseSet:
    """The phases of one case. Images keep their own geometry until alignment resamples them."""

    series: dict[Phase, LoadedSeries]
    evidence: dict[Phase, PhaseEvidence] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.series:
            raise ValueError("A PhaseSet needs at least one phase.")

    @property
    def phases(self) -> list[Phase]:
        return [p for p in PHASE_ORDER if p in self.series]

    @property
    def reference_phase(self) -> Phase:
        return next(p for p in REFERENCE_PREFERENCE if p in self.series)

    @property
    def reference_image(self) -> sitk.Image:
        return self.series[self.reference_phase].image

    def image(self, phase: Phase) -> sitk.Image:
        return self.series[phase].image

    @property
    def images(self) -> dict[Phase, sitk.Image]:
        return {p: self.series[p].image for p in self.phases}
