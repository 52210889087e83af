"""Turn a user's input path (DICOM folder, DICOM file, NIfTI/NRRD/MHA file) into HU volumes.

Every check that can fail does so here, before any output exists: missing or empty paths,
non-image files, non-CT series, corrupt slices, and several patients in one folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from PancreasAILib.dicom_read import (
    MIN_SLICES_FOR_VOLUME,
    group_summary,
    is_volume_series,
    load_series,
    scan_dicom_folder,
)
from PancreasAILib.errors import InconsistentInputError, InputError
from PancreasAILib.image_checks import (
    check_geometry,
    check_image_file_header,
    check_pixels,
    nifti_nonfinite_voxels,
)
from PancreasAILib.phases import LoadedSeries, SeriesInfo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


def load_image_file(path: Path) -> LoadedSeries:
    """Read a NIfTI/NRRD/MHA volume as float32 HU in LPS, after header, size and pixel checks."""
    reader = check_image_file_header(path)
    image = reader.Execute()
    check_pixels(image, str(path), nifti_nonfinite_voxels(path))
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    info = SeriesInfo(source=path, kind="file", num_slices=image.GetSize()[2])
    return LoadedSeries(image=image, info=info)


def _dicom_folder_of(path: Path) -> tuple[Path, str | None]:
    """For a single DICOM file, its folder and SeriesInstanceUID (the series is what the user means)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise InputError(
            f"{path} is neither a supported image file nor a readable DICOM file.",
            "Give a DICOM series folder or a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr) or MetaImage (.mha/.mhd) file.",
        ) from error
    return path.parent, str(getattr(ds, "SeriesInstanceUID", "") or "") or None


def load_dicom_folder(folder: Path, series_uid: str | None = None) -> list[LoadedSeries]:
    """Every CT volume series in a DICOM folder (recursively), each checked and converted to HU."""
    all_series, corrupt = scan_dicom_folder(folder)
    if corrupt:
        names = ", ".join(p.name for p in corrupt[:3]) + (" …" if len(corrupt) > 3 else "")
        raise InputError(
            f"{len(corrupt)} file(s) in {folder} look like DICOM but cannot be read (corrupt): {names}.",
            "Re-send the series from PACS, or remove the damaged files if they are not part of the CT series.",
        )
    if series_uid is not None:
        all_series = [s for s in all_series if s.key[0] == series_uid]
    if not all_series:
        raise InputError(
            f"{folder} holds no DICOM images or image files.",
            "Point to the folder that holds the CT series' DICOM files, or to a NIfTI/NRRD/MHA file.",
        )
    by_modality = group_summary(all_series)
    ct_series = [s for s in by_modality.get("CT", []) if is_volume_series(s)]
    if not ct_series:
        found = ", ".join(f"{len(v)} {k} series" for k, v in by_modality.items())
        short = [s for s in by_modality.get("CT", []) if len(s.files) < MIN_SLICES_FOR_VOLUME]
        if short and len(by_modality) == 1:
            first = short[0].first
            check_geometry(
                (int(first.Columns), int(first.Rows), len(short[0].files)),
                (1.0, 1.0, 1.0),
                f"The CT series in {folder}",
            )
        raise InputError(
            f"{folder} holds no CT volume series (found {found}).",
            "Give the contrast-enhanced CT series; PancreasAI works on axial CT volumes, not "
            f"{'/'.join(sorted(by_modality))} images, scouts or single slices.",
        )
    patients = {s.info(folder).patient_key for s in ct_series}
    if len(patients) > 1:
        raise InconsistentInputError(
            f"{folder} holds CT series of {len(patients)} different patients.",
            "Put each patient's series in its own folder and run PancreasAI per patient.",
        )
    loaded = []
    for series in ct_series:
        image, info = load_series(series, folder)
        check_pixels(image, info.series_description or str(folder))
        loaded.append(LoadedSeries(image=image, info=info))
    return loaded


def load_input(path: Path | str) -> list[LoadedSeries]:
    """All CT volumes at `path`: one for an image file, one or several for a DICOM folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(
            f"The input {path} does not exist.",
            "Check the path (a DICOM series folder or a NIfTI/NRRD/MHA file) and its spelling.",
        )
    if path.is_file():
        if is_image_file(path):
            return [load_image_file(path)]
        folder, uid = _dicom_folder_of(path)
        return load_dicom_folder(folder, uid)
    entries = [p for p in path.rglob("*") if p.is_file()]
    if not entries:
        raise InputError(
            f"The folder {path} is empty.",
            "Point to the folder that holds the CT series' DICOM files, or to a NIfTI/NRRD/MHA file.",
        )
    image_files = sorted(p for p in entries if is_image_file(p))
    if image_files and len(image_files) == len(entries):
        return [load_image_file(p) for p in image_files]
    return load_dicom_folder(path)
