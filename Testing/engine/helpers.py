"""Small CT phantoms for input-validation tests (the anatomy-driven ones use PancreasAILib.synthesis).

The phantom has a body outline with fat and muscle, a vertebral body, an aorta in front of it and a
liver on the patient's right, with phase-dependent enhancement, so loaders and phase
identification see CT-like values without the cost of a full synthetic case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.dicom_write import SeriesHeader, write_dicom_series

PHASE_HU = {"arterial": (300.0, 75.0), "venous": (165.0, 108.0), "delayed": (110.0, 85.0)}


def ct_phantom(
    phase: str = "venous",
    size=(120, 100, 24),
    spacing=(2.0, 2.0, 4.0),
    seed: int = 0,
    direction=None,
    origin=(-120.0, -100.0, -50.0),
) -> sitk.Image:
    """An abdomen-like float32 HU volume (LPS: x to patient left, y posterior, z superior)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    _z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    xm = (x - nx / 2) * spacing[0]
    ym = (y - ny / 2) * spacing[1]
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    body = (xm / (nx * spacing[0] * 0.42)) ** 2 + (ym / (ny * spacing[1] * 0.40)) ** 2 < 1
    inner = (xm / (nx * spacing[0] * 0.36)) ** 2 + (ym / (ny * spacing[1] * 0.33)) ** 2 < 1
    hu[body] = -100.0
    hu[inner] = 40.0
    aorta_hu, liver_hu = PHASE_HU[phase]
    liver = ((xm + 45) / 40) ** 2 + ((ym + 5) / 35) ** 2 < 1
    hu[liver & inner] = liver_hu
    spine = (xm / 16) ** 2 + ((ym - 40) / 14) ** 2 < 1
    cortex = spine & ~((xm / 13) ** 2 + ((ym - 40) / 11) ** 2 < 1)
    hu[spine] = 220.0 + rng.normal(0, 70, hu.shape)[spine]  # trabecular bone is heterogeneous
    hu[cortex] = 700.0
    aorta = ((xm - 10) / 11) ** 2 + ((ym - 15) / 11) ** 2 < 1
    hu[aorta] = aorta_hu
    hu += rng.normal(0, 12, hu.shape).astype(np.float32)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def write_phantom_dicom(
    folder: Path,
    phase: str = "venous",
    *,
    description: str | None = None,
    patient_id: str = "PAT1",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    series_uid: str | None = None,
    time_s: float = 36000.0,
    modality: str = "CT",
    size=(120, 100, 24),
    seed: int = 0,
    **header,
) -> list[Path]:
    image = ct_phantom(phase, size=size, seed=seed)
    series_header = SeriesHeader(
        patient_id=patient_id,
        study_uid=study_uid,
        modality=modality,
        series_description=description if description is not None else phase,
        contrast_agent="Iomeprol",
        acquisition_time_s=time_s,
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.99",
        **header,
    )
    if series_uid:
        series_header.series_uid = series_uid
    return write_dicom_series(image, folder, series_header, shuffle_names_seed=seed + 1)
