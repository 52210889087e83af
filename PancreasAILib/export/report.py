"""The case report (report.json): a versioned schema of plain dataclasses, checked on the way in and out.

The report is what a research engineer greps and what the Slicer module shows, so it must be stable
(`REPORT_SCHEMA_VERSION`; add fields with defaults, marked `_since(minor)`, and bump the minor
version, so reports of earlier minor versions still read; rename or remove only with a major bump)
and must never carry PHI: inputs are described by `SeriesInfo.to_report()`, which holds salted
hashes instead of patient/study identifiers and no UIDs or DICOM paths.
`assert_no_phi` checks a report for given identifiers and for anything shaped like a DICOM UID.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from PancreasAILib import __version__
from PancreasAILib.export.grid import GeometryInfo

REPORT_SCHEMA_VERSION = "1.4"
SegmentationStatus = Literal["done", "not_run", "no_pancreas"]
_UID_PATTERN = re.compile(r"\b[0-2](\.(0|[1-9]\d*)){4,}\b")  # e.g. 1.2.840.113619.2.55 (DICOM UID shape)


def _since(minor: int) -> dict[str, int]:
    """Field metadata: added in schema 1.<minor>, so a report of an earlier minor version may lack it."""
    return {"since_minor": minor}


class ReportValidationError(ValueError):
    """A report dict that does not follow the schema (missing field, wrong type, bad value)."""


@dataclass
class Lesion:
    """One connected tumour component. `centroid_mm` is in LPS millimetres (DICOM patient space)."""

    id: int
    confidence: float
    volume_ml: float
    longest_axial_diameter_mm: float
    centroid_mm: tuple[float, float, float]
    # 1.2: the network's confidence before the attenuation check (`cascade.attenuation`), the lesion's
    # mean HU minus the median of the rest of the gland per phase given, and whether it is darker
    # than the gland in the arterial or venous phase (None: too little gland to compare with, or
    # neither phase given; the delayed phase is no evidence, PDAC's stroma enhances late).
    network_confidence: float | None = field(default=None, metadata=_since(2))
    attenuation_hu: dict[str, float] | None = field(default=None, metadata=_since(2))
    hypoattenuating: bool | None = field(default=None, metadata=_since(2))


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass
class AlignmentInfo:
    """How one moving phase was aligned to the reference, with the similarity before and after.

    Filled from `registration.AlignmentResult`: metric "ncc", similarity_before/after = ncc_before/after.
    """

    phase: str
    method: str
    metric: str
    similarity_before: float | None = None
    similarity_after: float | None = None
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: float = 0.0  # total rotation angle (axis-angle magnitude), as registration reports it
    warning: str | None = None


@dataclass
class VesselExclusionInfo:
    """Enhanced vein taken out of the predicted gland (`cascade.vessels`): tissue brighter than the
    gland's venous median by `margin_hu` that continues outside the gland."""

    margin_hu: float
    excluded_ml: float
    gland_venous_median_hu: float | None = None  # None: too little gland to compare with

    def summary(self) -> str:
        """One line for a reader (the CLI's summary and the Slicer module say it alike)."""
        return (
            f"left out of the pancreas: {self.excluded_ml:.1f} mL of enhanced vein "
            f"(more than {self.margin_hu:.0f} HU above the gland, venous phase)"
        )


@dataclass
class HeatmapInfo:
    """Whether the anomaly heatmap was computed and where it peaks (LPS mm)."""

    computed: bool = False
    peak_value: float | None = None
    peak_mm: tuple[float, float, float] | None = None
    summary: str = "not computed"


@dataclass
class Report:
    """Everything a person or a script needs to know about one case, without PHI."""

    reference_phase: str
    schema_version: str = REPORT_SCHEMA_VERSION
    pancreasai_version: str = __version__
    created_utc: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> SeriesInfo.to_report()
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> PhaseEvidence.to_report()
    reference_geometry: GeometryInfo | None = None
    alignment: list[AlignmentInfo] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    segmentation_status: SegmentationStatus = "not_run"
    segmentation_reason: str | None = None
    pdac_likelihood: float | None = None
    # the head alone, so a calibration can be refitted
    pdac_classifier_probability: float | None = field(default=None, metadata=_since(1))
    lesions: list[Lesion] = field(default_factory=list)
    # the share of its confidence a lesion darker than the gland in neither the arterial nor the
    # venous phase kept (1.0: not weighed; None: no segmentation); the likelihood calibration is
    # fitted for one such weight
    non_hypo_lesion_weight: float | None = field(default=None, metadata=_since(2))
    # 1.3: the bright-vessel step (None: not run, e.g. no venous phase or switched off)
    vessel_exclusion: VesselExclusionInfo | None = field(default=None, metadata=_since(3))
    # 1.4: the half-width (HU) over which that weight is graded (0: a hard cut at the gland's
    # attenuation), and the probability down to which stage 1's gland was grown (None: not grown)
    attenuation_ramp_hu: float | None = field(default=None, metadata=_since(4))
    stage1_grow_threshold: float | None = field(default=None, metadata=_since(4))
    heatmap: HeatmapInfo = field(default_factory=HeatmapInfo)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational, e.g. why an output was omitted
    outputs: list[str] = field(default_factory=list)  # file names written beside report.json

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}  # the version first, for readers

    def to_json(self) -> str:
        data = self.to_dict()
        validate_report(data)
        return json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        validate_report(data)
        return _build(cls, data, "report")

    @classmethod
    def from_json(cls, text: str) -> Report:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReportValidationError(f"report.json is not valid JSON: {err}") from err
        return cls.from_dict(data)


# --- validation and construction, driven by the dataclasses' own type hints -------------------------


def validate_report(data: Any) -> None:
    """Raise ReportValidationError naming the first field that is missing, unknown or of the wrong type."""
    if not isinstance(data, dict):
        raise ReportValidationError("A report must be a JSON object.")
    version = data.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != REPORT_SCHEMA_VERSION.split(".")[0]:
        raise ReportValidationError(
            f"schema_version {version!r} is not readable by this version (expects {REPORT_SCHEMA_VERSION})."
        )
    _check(Report, data, "report", _minor(version))
    if data["pdac_likelihood"] is not None and not 0.0 <= data["pdac_likelihood"] <= 1.0:
        raise ReportValidationError("report.pdac_likelihood must lie in [0, 1].")
    for n, lesion in enumerate(data["lesions"]):
        if not 0.0 <= lesion["confidence"] <= 1.0:
            raise ReportValidationError(f"report.lesions[{n}].confidence must lie in [0, 1].")
        if lesion["volume_ml"] < 0 or lesion["longest_axial_diameter_mm"] < 0:
            raise ReportValidationError(f"report.lesions[{n}] has a negative size.")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _minor(version: str) -> int:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _check(tp: Any, value: Any, where: str, minor: int) -> None:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        _check_json_value(value, where)
    elif dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ReportValidationError(f"{where} must be an object.")
        hints = _hints(tp)
        unknown = set(value) - set(hints)
        if unknown:
            raise ReportValidationError(f"{where} has unknown field(s): {', '.join(sorted(unknown))}.")
        for f in dataclasses.fields(tp):
            if f.name not in value:
                if minor < f.metadata.get("since_minor", 0):
                    continue  # added after this report was written: it reads with the default
                raise ReportValidationError(f"{where}.{f.name} is missing.")
            _check(hints[f.name], value[f.name], f"{where}.{f.name}", minor)
    elif origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                _check(option, value, where, minor)
                return
            except ReportValidationError as err:
                errors.append(str(err))
        raise ReportValidationError(f"{where} has the wrong type ({type(value).__name__}): {errors[0]}")
    elif tp is type(None):
        if value is not None:
            raise ReportValidationError(f"{where} must be null.")
    elif origin is Literal:
        if value not in args:
            raise ReportValidationError(
                f"{where} must be one of {', '.join(map(repr, args))}; got {value!r}."
            )
    elif tp is bool:
        if not isinstance(value, bool):
            raise ReportValidationError(f"{where} must be true or false.")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReportValidationError(f"{where} must be an integer.")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ReportValidationError(f"{where} must be a finite number.")
    elif tp is str:
        if not isinstance(value, str):
            raise ReportValidationError(f"{where} must be a string.")
    elif origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ReportValidationError(f"{where} must be a list.")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ReportValidationError(f"{where} must have {len(args)} items.")
        for n, item in enumerate(value):
            item_type = args[0] if origin is list or args[-1] is Ellipsis else args[n]
            _check(item_type, item, f"{where}[{n}]", minor)
    elif origin is dict:
        if not isinstance(value, dict):
            raise ReportValidationError(f"{where} must be an object.")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ReportValidationError(f"{where} keys must be strings.")
            _check(args[1], item, f"{where}[{key!r}]", minor)
    else:  # pragma: no cover - a schema type this validator does not know
        raise TypeError(f"Unsupported schema type {tp!r} at {where}.")


def _check_json_value(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportValidationError(f"{where} must be a finite number.")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_value(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            _check_json_value(item, f"{where}[{n}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ReportValidationError(f"{where} holds a {type(value).__name__}, which JSON cannot store.")


def _build(tp: Any, value: Any, where: str) -> Any:
    """Turn validated JSON data into dataclasses, tuples and floats as the type hints say."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(**{name: _build(hints[name], item, f"{where}.{name}") for name, item in value.items()})
    if origin in (Union, types.UnionType):
        option = next(a for a in args if a is not type(None))
        return _build(option, value, where)
    if tp is float:
        return float(value)
    if origin is tuple:
        types_ = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_build(t, v, where) for t, v in zip(types_, value, strict=True))
    if origin is list:
        return [_build(args[0], v, where) for v in value]
    if origin is dict:
        return {k: _build(args[1], v, where) for k, v in value.items()}
    return value


# --- PHI guard ---------------------------------------------------------------------------------------


def _strings(value: Any, where: str = "report") -> Iterable[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield where, str(key)
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            yield from _strings(item, f"{where}[{n}]")
    elif value is not None:
        yield where, str(value)


def find_phi(report: dict[str, Any] | str, forbidden: Iterable[str] = ()) -> list[str]:
    """Where `report` (a dict or its JSON text) contains a forbidden string or a DICOM-UID-shaped value."""
    data = json.loads(report) if isinstance(report, str) else report
    needles = [s.strip().lower() for s in forbidden if s and s.strip()]
    found = []
    for where, text in _strings(data):
        lowered = text.lower()
        found += [f"{where} contains {needle!r}" for needle in needles if needle in lowered]
        if _UID_PATTERN.search(text):
            found.append(f"{where} contains a DICOM UID")
    return found


def assert_no_phi(report: dict[str, Any] | str, forbidden: Iterable[str] = ()) -> None:
    """Raise AssertionError when the report contains any forbidden identifier or a UID."""
    found = find_phi(report, forbidden)
    if found:
        raise AssertionError("The report contains identifying data: " + "; ".join(found))
