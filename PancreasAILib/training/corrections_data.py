"""Correction records (exported from the Slicer module after a radiologist's edits) as stage-2 training data.

Each record holds the phases and the corrected label map on one grid. The phases were exported as
loaded, so the non-reference phases are registered onto the reference here (as `segment` does)
before preprocessing; the corrected label is the ground truth.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from PancreasAILib.corrections import load_correction_records
from PancreasAILib.errors import InputError
from PancreasAILib.geometry import resample_to_reference
from PancreasAILib.phases import REFERENCE_PREFERENCE, Phase
from PancreasAILib.registration import PreparedReference, register_phase
from PancreasAILib.training.preprocess import preprocess_case, save_case


def aligned_phases(paths: dict[str, Path]) -> dict[Phase, sitk.Image]:
    """The record's phases, the non-reference ones registered rigidly onto the reference phase."""
    images = {Phase(name): sitk.ReadImage(str(path), sitk.sitkFloat32) for name, path in paths.items()}
    reference_phase = next(p for p in REFERENCE_PREFERENCE if p in images)
    reference = images[reference_phase]
    prepared = PreparedReference.from_image(reference) if len(images) > 1 else None
    out = {reference_phase: reference}
    for phase, image in images.items():
        if phase != reference_phase:
            result = register_phase(prepared, image, phase)
            out[phase] = resample_to_reference(
                image, reference, transform=result.transform, default_value=-1024.0
            )
    return out


def build_corrections_cache(root: Path, out_dir: Path, progress=None) -> list[Path]:
    records = load_correction_records(Path(root))
    if not records:
        raise InputError(
            f"No correction records in {root}.",
            "Export corrected segmentations from the Slicer module first (each export stores one).",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, record in enumerate(records):
        path = out_dir / f"correction_{record.record_dir.name}.npz"
        if not path.exists():
            labels = sitk.ReadImage(str(record.corrected_label), sitk.sitkUInt8)
            arrays = preprocess_case(aligned_phases(record.phases), labels)
            save_case(
                path,
                arrays,
                {
                    "source": "correction",
                    "record": record.record_dir.name,
                    "model_versions": record.model_versions,
                },
            )
        paths.append(path)
        if progress:
            progress("preprocess", (k + 1) / len(records), record.record_dir.name)
    return paths
