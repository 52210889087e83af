"""Write a SimpleITK CT volume as a DICOM CT series with proper headers.

Used by `pancreasai synth --dicom` and by tests that need realistic DICOM input (several series,
two patients, gantry tilt, gaps). Slices are written as CT Image Storage with stored values
HU + 1024 (unsigned, RescaleIntercept -1024), the convention of most scanners.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from PancreasAILib import __version__


@dataclass
class SeriesHeader:
    """The identifying and descriptive tags of one series (synthetic cases only: no real PHI)."""

    patient_id: str = "SYNTH0001"
    patient_name: str = "Synthetic^Case"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    series_description: str = ""
    protocol_name: str = ""
    contrast_agent: str | None = None
    acquisition_time_s: float | None = None  # seconds after midnight
    series_number: int = 1
    modality: str = "CT"
    study_date: str = "20260101"
    gantry_tilt_deg: float = 0.0


def _dicom_time(seconds: float) -> str:
    seconds = max(0.0, min(seconds, 86399.999))
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


def write_dicom_series(
    image: sitk.Image,
    out_dir: Path,
    header: SeriesHeader,
    *,
    file_prefix: str = "CT",
    shuffle_names_seed: int | None = None,
) -> list[Path]:
    """Write `image` (HU, any 3D orientation) as one file per slice; returns the files in slice order.

    `shuffle_names_seed` gives files names that do not sort by position, as real exports often do.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image)  # z, y, x
    stored = np.clip(np.round(array.astype(np.float64)) + 1024, 0, 65535).astype(np.uint16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    row_dir, col_dir = direction[:, 0], direction[:, 1]
    spacing = image.GetSpacing()
    names = [f"{file_prefix}{i:04d}.dcm" for i in range(array.shape[0])]
    if shuffle_names_seed is not None:
        rng = np.random.default_rng(shuffle_names_seed)
        names = [f"{file_prefix}{code:08x}.dcm" for code in rng.choice(2**31, size=len(names), replace=False)]
    files: list[Path] = []
    now = _dt.datetime(2026, 1, 1)
    for k in range(array.shape[0]):
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationVersionName = f"PANCREASAI_{__version__}"[:16]
        ds = FileDataset(str(out_dir / names[k]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = header.modality
        ds.PatientID = header.patient_id
        ds.PatientName = header.patient_name
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = header.study_uid
        ds.SeriesInstanceUID = header.series_uid
        ds.FrameOfReferenceUID = header.frame_of_reference_uid
        ds.StudyDate = header.study_date
        ds.SeriesDate = header.study_date
        ds.StudyTime = "080000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "PancreasAI synthetic"
        ds.SeriesNumber = header.series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = header.series_description
        ds.ProtocolName = header.protocol_name
        if header.contrast_agent:
            ds.ContrastBolusAgent = header.contrast_agent
        if header.acquisition_time_s is not None:
            ds.AcquisitionTime = _dicom_time(header.acquisition_time_s)
            ds.SeriesTime = _dicom_time(header.acquisition_time_s)
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.GantryDetectorTilt = f"{header.gantry_tilt_deg:.2f}"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(out_dir / names[k], enforce_file_format=True)
        files.append(out_dir / names[k])
    return files


def read_back_check(path: Path) -> pydicom.Dataset:
    """Small helper for tests: read one written file with full validation."""
    return pydicom.dcmread(path)
