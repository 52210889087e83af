"""Assemble a `PhaseSet` from user inputs: load, identify phases, apply overrides, check consistency.

Inputs come as paths with a phase the user stated (`--venous V`) or without (positional paths, where
a folder may hold several series). Identification runs on every series so the report shows its
evidence even where the user chose; a user's choice always wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from PancreasAILib.errors import InconsistentInputError, InputError
from PancreasAILib.inputs import load_input
from PancreasAILib.phase_id import identify_phases
from PancreasAILib.phases import PHASE_ORDER, LoadedSeries, Phase, PhaseEvidence, PhaseSet

log = logging.getLogger(__name__)


def load_series_with_evidence(paths: Sequence[Path | str]) -> list[tuple[LoadedSeries, PhaseEvidence]]:
    """Every CT series under `paths`, each with its automatic phase identification."""
    loaded: list[LoadedSeries] = []
    for path in paths:
        loaded.extend(load_input(path))
    return list(zip(loaded, identify_phases(loaded), strict=True))


def check_same_patient_and_study(series: Sequence[LoadedSeries], force: bool) -> list[str]:
    """Refuse series of different patients or studies unless forced (then warn)."""
    warnings: list[str] = []
    patients = {s.info.patient_key for s in series if s.info.patient_key}
    studies = {s.info.study_key for s in series if s.info.study_key}
    problems = []
    if len(patients) > 1:
        problems.append(
            (
                "The inputs belong to different patients (their patient identifiers differ).",
                "Give the phases of one patient only. If the identifiers differ only because of "
                "anonymisation and you are sure it is one patient, pass --force.",
            )
        )
    if len(studies) > 1:
        problems.append(
            (
                "The inputs come from different studies (their StudyInstanceUIDs differ), so they "
                "may not be phases of one examination.",
                "Give phases of one study. If they are one examination split across studies, pass --force.",
            )
        )
    for problem, fix in problems:
        if not force:
            raise InconsistentInputError(problem, fix)
        warnings.append(f"{problem} Continued because --force was given.")
    return warnings


def _describe(item: LoadedSeries) -> str:
    info = item.info
    if info.kind == "file":
        return info.source.name
    return f"'{info.series_description or 'unnamed series'}' ({info.num_slices} slices)"


def build_phase_set(
    explicit: Mapping[Phase, Path | str] | None = None,
    auto: Sequence[Path | str] = (),
    *,
    force: bool = False,
) -> PhaseSet:
    """A PhaseSet from explicitly phased inputs and inputs to identify automatically."""
    explicit = dict(explicit or {})
    if not explicit and not auto:
        raise InputError("No input was given.", "Give at least one phase, e.g. --venous PATH or a path.")
    explicit_found: dict[Phase, tuple[LoadedSeries, PhaseEvidence]] = {}
    for phase, path in explicit.items():
        found = load_series_with_evidence([path])
        if len(found) > 1:
            raise InputError(
                f"{path} holds {len(found)} CT series, but --{phase.value} needs exactly one.",
                f"Point --{phase.value} to one series' folder or file, or give the folder without a phase "
                "flag so PancreasAI identifies each series.",
            )
        explicit_found[phase] = found[0]
    return assemble_phase_set(explicit_found, load_series_with_evidence(auto) if auto else [], force=force)


def assemble_phase_set(
    explicit: Mapping[Phase, tuple[LoadedSeries, PhaseEvidence]],
    auto: Sequence[tuple[LoadedSeries, PhaseEvidence]],
    *,
    force: bool = False,
) -> PhaseSet:
    """Combine series the user phased with identified ones; refuse duplicates and mixed patients."""
    chosen: dict[Phase, tuple[LoadedSeries, PhaseEvidence]] = {}
    warnings: list[str] = []
    for phase, (item, evidence) in explicit.items():
        if evidence.phase is not None and evidence.phase != phase and evidence.confidence > 0.8:
            warnings.append(
                f"You set {_describe(item)} as {phase.value}, but it looks {evidence.phase.value} "
                f"(confidence {evidence.confidence:.2f}); your choice was kept."
            )
        lines = [*evidence.evidence, f"set to {phase.value} by the user"]
        chosen[phase] = (item, PhaseEvidence(phase, 1.0, lines, dict(evidence.scores), overridden=True))
    for item, evidence in auto:
        if evidence.phase is None:
            warnings.append(f"{_describe(item)} looks unenhanced and was left out.")
            continue
        if evidence.phase in chosen:
            other = chosen[evidence.phase][0]
            raise InconsistentInputError(
                f"Two series claim the {evidence.phase.value} phase: {_describe(other)} and {_describe(item)}.",
                "Say which is which with --arterial/--venous/--delayed, or leave one of them out.",
            )
        chosen[evidence.phase] = (item, evidence)
    if not chosen:
        raise InputError(
            "None of the inputs is a contrast-enhanced CT phase.",
            "Give arterial, venous or delayed contrast CT series.",
        )
    warnings += check_same_patient_and_study([item for item, _ in chosen.values()], force)
    ordered = {p: chosen[p] for p in PHASE_ORDER if p in chosen}
    for warning in warnings:
        log.warning(warning)
    return PhaseSet(
        series={p: v[0] for p, v in ordered.items()},
        evidence={p: v[1] for p, v in ordered.items()},
        warnings=warnings,
    )
