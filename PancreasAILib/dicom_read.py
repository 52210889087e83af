"""DICOM series discovery and assembly into HU volumes in LPS physical space.

Slices are grouped by SeriesInstanceUID (and orientation, for series that mix stacks), sorted by
their position along the slice normal (never by file name), checked for gaps, gantry tilt and
mixed geometry, and converted to HU with each slice's own RescaleSlope/Intercept.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from PancreasAILib.errors import InconsistentInputError, InputError
from PancreasAILib.image_checks import check_geometry, check_memory
from PancreasAILib.phases import SeriesInfo

log = logging.getLogger(__name__)

# A per-process salt: identifiers are compared within one run but never recoverable from reports.
_SALT = os.urandom(16)
# Image types that are not diagnostic axial volumes.
_NON_VOLUME_IMAGE_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SECONDARY", "DERIVED_MPR", "MIP", "MPR"}
MIN_SLICES_FOR_VOLUME = 8


def hashed_key(*values: object) -> str | None:
    """A salted hash of identifiers (patient, study) for consistency checks without PHI."""
    text = "|".join(str(v).strip() for v in values if v is not None and str(v).strip())
    if not text:
        return None
    return hashlib.sha256(_SALT + text.encode()).hexdigest()[:12]


def _seconds(value: object) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) to seconds after midnight."""
    text = str(value or "").strip()
    if len(text) < 2:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


@dataclass
class DicomSeries:
    """The slices of one series (headers only until `load_series` reads the pixels)."""

    key: tuple[str, tuple[float, ...]]
    files: list[Path] = field(default_factory=list)
    headers: list[pydicom.Dataset] = field(default_factory=list)

    @property
    def first(self) -> pydicom.Dataset:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return str(getattr(self.first, "Modality", "") or "")

    @property
    def description(self) -> str:
        return str(getattr(self.first, "SeriesDescription", "") or "")

    def info(self, source: Path, sorted_files: list[Path] | None = None) -> SeriesInfo:
        first = self.first
        return SeriesInfo(
            source=source,
            kind="dicom",
            modality=self.modality or None,
            series_description=self.description or None,
            protocol_name=str(getattr(first, "ProtocolName", "") or "") or None,
            contrast_agent=str(getattr(first, "ContrastBolusAgent", "") or "") or None,
            acquisition_time_s=_seconds(getattr(first, "AcquisitionTime", None))
            or _seconds(getattr(first, "SeriesTime", None)),
            patient_key=hashed_key(
                getattr(first, "PatientID", None),
                getattr(first, "PatientName", None),
                getattr(first, "PatientBirthDate", None),
            ),
            study_key=hashed_key(getattr(first, "StudyInstanceUID", None)),
            series_uid=str(getattr(first, "SeriesInstanceUID", "") or "") or None,
            frame_of_reference_uid=str(getattr(first, "FrameOfReferenceUID", "") or "") or None,
            num_slices=len(self.files),
            dicom_files=tuple(sorted_files or self.files),
        )


def _is_image_slice(ds: pydicom.Dataset) -> bool:
    return "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "Rows" in ds


def scan_dicom_folder(folder: Path) -> tuple[list[DicomSeries], list[Path]]:
    """Read the headers of every DICOM file under `folder` (recursively) and group them by series.

    Returns the series and the files that look like DICOM but could not be parsed (corrupt).
    """
    groups: dict[tuple, DicomSeries] = {}
    corrupt: list[Path] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            if _has_dicom_preamble(path):
                corrupt.append(path)
            continue
        except (OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
            corrupt.append(path)
            continue
        if not _is_image_slice(ds):
            continue
        orientation = tuple(round(float(v), 3) for v in ds.ImageOrientationPatient)
        key = (str(getattr(ds, "SeriesInstanceUID", "") or path.parent), orientation)
        series = groups.setdefault(key, DicomSeries(key=key))
        series.files.append(path)
        series.headers.append(ds)
    return list(groups.values()), corrupt


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_volume_series(series: DicomSeries) -> bool:
    """A CT series that can be a phase: not a scout, localiser or reformatted single image."""
    image_type = {str(v).upper() for v in getattr(series.first, "ImageType", [])}
    return len(series.files) >= MIN_SLICES_FOR_VOLUME and not (image_type & _NON_VOLUME_IMAGE_TYPES)


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    row, col = (
        np.array(ds.ImageOrientationPatient[:3], float),
        np.array(ds.ImageOrientationPatient[3:], float),
    )
    return np.cross(row, col)


def load_series(series: DicomSeries, source: Path) -> tuple[sitk.Image, SeriesInfo]:
    """Assemble one series into a float32 HU image (LPS), after checking its slice geometry."""
    name = f"DICOM series '{series.description or 'unnamed'}' in {source}"
    if series.modality and series.modality != "CT":
        raise InputError(
            f"{name} is modality {series.modality}, not CT.",
            "Give the contrast-enhanced CT series; PancreasAI works on CT only.",
        )
    first = series.first
    if int(getattr(first, "SamplesPerPixel", 1)) != 1:
        raise InputError(
            f"{name} stores {first.SamplesPerPixel} samples per pixel (colour), not CT attenuation values.",
            "Give the original greyscale CT series, not secondary-capture screenshots.",
        )
    rows, cols = int(first.Rows), int(first.Columns)
    if len(series.files) < 2:
        check_geometry((cols, rows, 1), (1.0, 1.0, 1.0), name)
    normal = _normal(first)
    positions = np.array([np.dot(normal, np.array(ds.ImagePositionPatient, float)) for ds in series.headers])
    order = np.argsort(positions, kind="stable")
    headers = [series.headers[i] for i in order]
    files = [series.files[i] for i in order]
    positions = positions[order]
    _check_tilt(headers, normal, name)
    steps = np.diff(positions)
    if np.any(steps < 1e-3):
        raise InconsistentInputError(
            f"{name} has several slices at the same position (duplicated slices or two acquisitions "
            "sharing one SeriesInstanceUID).",
            "Export each acquisition as its own series, or remove the duplicated files.",
        )
    spacing_z = float(np.median(steps)) if len(steps) else float(getattr(first, "SliceThickness", 1.0))
    gaps = np.flatnonzero(steps > 1.5 * spacing_z)
    if gaps.size:
        where = ", ".join(f"{positions[g]:.1f}–{positions[g + 1]:.1f} mm" for g in gaps[:3])
        raise InputError(
            f"{name} has missing slices: gaps in slice positions at {where} (regular spacing {spacing_z:.2f} mm).",
            "Re-send the complete series from PACS; some slice files are missing from the folder.",
        )
    pixel_spacing = [float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0])]
    size = (cols, rows, len(files))
    check_geometry(size, (pixel_spacing[1], pixel_spacing[0], spacing_z), name)
    check_memory(size, name)
    volume = np.empty((len(files), rows, cols), dtype=np.float32)
    for k, path in enumerate(files):
        volume[k] = _read_slice_hu(path, rows, cols, name)
    image = sitk.GetImageFromArray(volume)
    row_dir = np.array(first.ImageOrientationPatient[:3], float)
    col_dir = np.array(first.ImageOrientationPatient[3:], float)
    image.SetDirection(tuple(np.column_stack([row_dir, col_dir, normal]).ravel()))
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], spacing_z))
    image.SetOrigin(tuple(float(v) for v in headers[0].ImagePositionPatient))
    series.headers, series.files = headers, files
    return image, series.info(source, files)


def _check_tilt(headers: list[pydicom.Dataset], normal: np.ndarray, name: str) -> None:
    tilt = float(getattr(headers[0], "GantryDetectorTilt", 0) or 0)
    if len(headers) >= 2:
        first = np.array(headers[0].ImagePositionPatient, float)
        last = np.array(headers[-1].ImagePositionPatient, float)
        step = last - first
        length = np.linalg.norm(step)
        if length > 0:
            off_axis = np.degrees(np.arccos(min(1.0, abs(np.dot(step / length, normal)))))
            tilt = max(abs(tilt), off_axis)
    if abs(tilt) > 0.5:
        raise InputError(
            f"{name} was acquired with gantry tilt ({tilt:.1f}°): its slices are sheared, not stacked "
            "along their normal, so its geometry cannot be represented without resampling.",
            "Resample it to a non-tilted grid first (3D Slicer's DICOM import offers 'acquisition "
            "transform' correction; dcm2niix corrects tilt), then give the corrected NIfTI/NRRD file.",
        )


def _read_slice_hu(path: Path, rows: int, cols: int, name: str) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        RuntimeError,
        NotImplementedError,
        InvalidDicomError,
    ) as error:  # the types pydicom raises for damaged data
        raise InputError(
            f"{name}: the slice file {path.name} is corrupt ({type(error).__name__}: {error}).",
            "Re-send the series from PACS or remove the damaged file and re-export; PancreasAI will not "
            "fill in a missing slice.",
        ) from error
    if pixels.shape != (rows, cols):
        raise InputError(
            f"{name}: the slice file {path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the series is "
            f"{cols}x{rows}.",
            "The folder mixes images of different sizes: export the CT series on its own.",
        )
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def group_summary(series_list: list[DicomSeries]) -> dict[str, list[DicomSeries]]:
    """Series grouped by modality, for messages about folders without CT."""
    grouped: dict[str, list[DicomSeries]] = defaultdict(list)
    for series in series_list:
        grouped[series.modality or "unknown"].append(series)
    return grouped
