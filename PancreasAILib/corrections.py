"""Correction records: what a radiologist changed, kept so that stage 2 can be fine-tuned on it.

One record is one folder under a user's corrections root:

    <root>/<UTC time>-<8 hex>/
        record.json               schema version, model versions, hashed input ids, file names, counts
        arterial.nii.gz ...       the phases given, resampled onto the corrected label's grid
        corrected_label.nii.gz    uint8, 0 background, 1 pancreas, 2 tumour (the label contract)
        prediction.nii.gz         what the model predicted, on the same grid

A record is written into a hidden staging folder and renamed into place, so a reader never sees a
half-written one. Input identifiers are stored only as salted SHA-256 hashes (never PHI), so two
records of one patient can be matched without naming the patient. Nothing here imports Slicer.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib import __version__
from PancreasAILib.export.labels import LABELS, as_uint8_labels

log = logging.getLogger(__name__)

RECORD_JSON = "record.json"
RECORD_SCHEMA_VERSION = "1.0"
CORRECTED_NAME = "corrected_label.nii.gz"
PREDICTION_NAME = "prediction.nii.gz"
PHASE_NAMES: tuple[str, ...] = ("arterial", "venous", "delayed")
_ID_SALT = "pancreasai-correction-v1"  # fixed, so equal identifiers give equal hashes across records


@dataclass(frozen=True)
class CorrectionRecord:
    """One stored correction, with every image on the corrected label's grid."""

    phases: dict[str, Path]  # "arterial" / "venous" / "delayed" -> NIfTI path
    corrected_label: Path
    prediction: Path
    model_versions: dict
    record_dir: Path
    input_ids: dict[str, str] = field(default_factory=dict)  # name -> "sha256:..." (never the identifier)
    created_utc: str = ""


def hash_identifier(value: object) -> str:
    """A salted SHA-256 of an identifier; values already hashed by this function are kept."""
    text = str(value)
    if text.startswith("sha256:") and len(text) == 7 + 64:
        return text
    return "sha256:" + hashlib.sha256(f"{_ID_SALT}:{text}".encode()).hexdigest()


def _on_grid(image: sitk.Image, grid: sitk.Image, interpolator: int, pixel_type: int) -> sitk.Image:
    """`image` resampled onto `grid` in physical space (identity transform); exact copy when already on it."""
    same = (
        image.GetSize() == grid.GetSize()
        and np.allclose(image.GetOrigin(), grid.GetOrigin(), atol=1e-4)
        and np.allclose(image.GetSpacing(), grid.GetSpacing(), atol=1e-6)
        and np.allclose(image.GetDirection(), grid.GetDirection(), atol=1e-6)
    )
    if same:
        out = sitk.Cast(image, pixel_type)
        out.CopyInformation(grid)
        return out
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, 0.0, pixel_type)


def write_correction_record(
    root: Path,
    *,
    phases: Mapping[str, sitk.Image],
    prediction: sitk.Image,
    corrected: sitk.Image,
    model_versions: dict,
    input_ids: dict,
) -> Path:
    """Store one correction under `root` atomically and return its folder.

    `corrected` must hold only 0/1/2 (raises ValueError otherwise). Phases and prediction are resampled
    onto its grid in physical space (phases linearly, the prediction by nearest neighbour); phases are
    taken as given, so pass them aligned to the reference when they were registered.
    """
    if not phases:
        raise ValueError("A correction record needs at least one phase image.")
    unknown = sorted(set(phases) - set(PHASE_NAMES))
    if unknown:
        raise ValueError(f"Unknown phase name(s) {', '.join(unknown)}; use {', '.join(PHASE_NAMES)}.")
    corrected_u8 = as_uint8_labels(corrected)  # validates 0/1/2 and keeps the grid
    prediction_u8 = as_uint8_labels(
        _on_grid(prediction, corrected_u8, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    created = _dt.datetime.now(_dt.timezone.utc)
    name = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    staging = root / f".staging-{name}"
    staging.mkdir()
    try:
        files: dict[str, str] = {}
        for phase in PHASE_NAMES:
            if phase in phases:
                image = _on_grid(phases[phase], corrected_u8, sitk.sitkLinear, sitk.sitkFloat32)
                sitk.WriteImage(image, str(staging / f"{phase}.nii.gz"), useCompression=True)
                files[phase] = f"{phase}.nii.gz"
        sitk.WriteImage(corrected_u8, str(staging / CORRECTED_NAME), useCompression=True)
        sitk.WriteImage(prediction_u8, str(staging / PREDICTION_NAME), useCompression=True)
        corrected_array = sitk.GetArrayViewFromImage(corrected_u8)
        predicted_array = sitk.GetArrayViewFromImage(prediction_u8)
        record = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "pancreasai_version": __version__,
            "created_utc": created.isoformat(timespec="seconds"),
            "phases": files,
            "corrected_label": CORRECTED_NAME,
            "prediction": PREDICTION_NAME,
            "labels": {str(label.value): label.name for label in LABELS},
            "model_versions": model_versions,
            "input_ids": {str(k): hash_identifier(v) for k, v in input_ids.items() if v not in (None, "")},
            "grid": {
                "size": list(corrected_u8.GetSize()),
                "spacing_mm": list(corrected_u8.GetSpacing()),
                "origin_mm": list(corrected_u8.GetOrigin()),
                "direction": list(corrected_u8.GetDirection()),
            },
            "changed_voxels": {
                str(label.value): int(
                    np.count_nonzero((corrected_array == label.value) != (predicted_array == label.value))
                )
                for label in LABELS
            },
        }
        (staging / RECORD_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        final = root / name
        os.rename(staging, final)  # atomic on one file system: a reader sees all of it or nothing
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _load_record(folder: Path) -> CorrectionRecord:
    data = json.loads((folder / RECORD_JSON).read_text(encoding="utf-8"))
    major = str(data.get("schema_version", "")).split(".")[0]
    if major != RECORD_SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"schema_version {data.get('schema_version')!r} is not readable by this version")
    phases = {phase: folder / file for phase, file in data["phases"].items() if phase in PHASE_NAMES}
    record = CorrectionRecord(
        phases=phases,
        corrected_label=folder / data["corrected_label"],
        prediction=folder / data["prediction"],
        model_versions=dict(data.get("model_versions") or {}),
        record_dir=folder,
        input_ids=dict(data.get("input_ids") or {}),
        created_utc=str(data.get("created_utc", "")),
    )
    missing = [
        p.name for p in (*phases.values(), record.corrected_label, record.prediction) if not p.is_file()
    ]
    if not phases or missing:
        raise ValueError(f"missing files: {', '.join(missing) or 'no phase image'}")
    return record


def load_correction_records(root: Path) -> list[CorrectionRecord]:
    """Every complete record under `root`, oldest first; unreadable ones are skipped with a warning."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / RECORD_JSON).is_file():
            continue
        try:
            records.append(_load_record(folder))
        except (ValueError, KeyError, TypeError, OSError) as err:
            log.warning("Skipped correction record %s: %s", folder, err)
    return records
