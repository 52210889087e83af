"""Export a (corrected) segmentation with fixed label values on the reference geometry, and keep a record.

Whatever the user did in the Segment Editor (reordered, renamed, recoloured, added segments, painted
them into separate layers), the exported label map holds 1 where the pancreas segment is, 2 where the
tumour segment is (tumour wins where they overlap) and 0 elsewhere, on the reference volume's grid.
Segments are recognised by ID, then by name, then by terminology; others are left out and named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from PancreasAILogicLib.scene_io import volume_to_image

EXPORT_FORMATS: dict[str, str] = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".seg.nrrd": "Slicer segmentation",
    ".dcm": "DICOM SEG",
}


@dataclass
class LabelExport:
    labels: sitk.Image  # uint8 on the reference grid (LPS)
    ignored_segments: list[str] = field(default_factory=list)


def segment_label_value(segment_id: str, segment) -> int | None:
    """Our label (1 pancreas, 2 tumour) for a segment, or None when it is neither."""
    from PancreasAILib.export.labels import LABELS, TYPE_CODE_TO_LABEL, label_for_name

    for label in LABELS:
        if segment_id == label.segment_id:
            return label.value
    value = label_for_name(segment.GetName() or "")
    if value is not None:
        return value
    terminology = segment.GetTerminology() if hasattr(segment, "GetTerminology") else ""
    if not terminology:
        holder = vtk.mutable("") if hasattr(vtk, "mutable") else None
        if holder is not None and segment.GetTag(segment.GetTerminologyEntryTagName(), holder):
            terminology = str(holder)
    parts = terminology.split("~")
    if len(parts) > 2:
        code = parts[2].split("^")
        if len(code) > 1:
            return TYPE_CODE_TO_LABEL.get(code[1])
    return None


def _segment_mask(segmentation_node, segment_id: str, reference) -> np.ndarray:
    """One segment as a boolean (k, j, i) array on the reference volume's grid."""
    scene = segmentation_node.GetScene()
    # Slicer exports only into a labelmap node of the same scene: a hidden one, removed right after.
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__PancreasAI_export__")
    labelmap.SetHideFromEditors(True)
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference
        ):
            raise RuntimeError(f"Slicer could not export segment '{segment_id}' on the reference geometry.")
        if labelmap.GetImageData() is None:
            return np.zeros(reference.GetImageData().GetDimensions()[::-1], dtype=bool)
        return np.array(slicer.util.arrayFromVolume(labelmap) > 0)
    finally:
        scene.RemoveNode(labelmap)


def segmentation_to_labels(segmentation_node, reference) -> LabelExport:
    """The label map (1 pancreas, 2 tumour) of a segmentation on the reference geometry."""
    from PancreasAILib.export.labels import PANCREAS, TUMOR

    reference_image = volume_to_image(reference)
    labels = np.zeros(sitk.GetArrayViewFromImage(reference_image).shape, dtype=np.uint8)
    segmentation = segmentation_node.GetSegmentation()
    masks: dict[int, np.ndarray] = {}
    ignored: list[str] = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        value = segment_label_value(segment_id, segment)
        if value is None:
            ignored.append(segment.GetName())
            continue
        mask = _segment_mask(segmentation_node, segment_id, reference)
        masks[value] = masks[value] | mask if value in masks else mask
    for value in (PANCREAS, TUMOR):  # tumour last: it wins where both were painted
        if value in masks:
            labels[masks[value]] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference_image)
    return LabelExport(image, ignored)


def export_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, title in EXPORT_FORMATS.items():
        if name.endswith(suffix):
            return title
    raise ValueError(f"Unknown export format for {path.name}; use {', '.join(EXPORT_FORMATS)}.")


def write_labels(path: Path, labels: sitk.Image, source_dicom_files: Sequence[Path] = ()) -> Path:
    """Write through the engine's own writers, so the files match what `pancreasai` writes."""
    kind = export_format(path)
    if kind == "NIfTI":
        from PancreasAILib.export.labels import write_label_map

        return write_label_map(path, labels)
    if kind == "Slicer segmentation":
        from PancreasAILib.export.seg_nrrd import write_seg_nrrd

        return write_seg_nrrd(path, labels)
    from PancreasAILib import __version__
    from PancreasAILib.export.dicom_seg import write_dicom_seg

    if not source_dicom_files:
        raise ValueError("DICOM SEG needs a reference volume loaded from DICOM.")
    return write_dicom_seg(
        path,
        labels,
        list(source_dicom_files),
        algorithm_name="PancreasAI (corrected)",
        algorithm_version=__version__,
    )


def store_correction(
    corrections_root: Path,
    *,
    phase_nodes: dict,
    prediction_path: Path,
    corrected: sitk.Image,
    report: dict,
) -> Path:
    """Keep the original prediction, the corrected label and the inputs for fine-tuning later."""
    from PancreasAILib.corrections import write_correction_record

    phases = {phase: volume_to_image(node) for phase, node in phase_nodes.items() if node is not None}
    models: dict[str, dict] = {}
    for m in report.get("models") or []:
        if isinstance(m, dict) and "name" in m:  # an ensemble lists one entry per member: keep every checksum
            kept = models.setdefault(m["name"], {"version": m.get("version"), "sha256": []})
            kept["sha256"].append(m.get("sha256"))
    input_ids: dict[str, str] = {}
    for phase, info in (report.get("inputs") or {}).items():
        for key in ("patient_key", "study_key"):
            if info.get(key):
                input_ids[f"{phase}.{key}"] = info[key]
    for phase, node in phase_nodes.items():
        uids = node.GetAttribute("DICOM.instanceUIDs") if node is not None else None
        if uids:
            input_ids[f"{phase}.instances"] = uids  # hashed by write_correction_record, never stored
    return write_correction_record(
        corrections_root,
        phases=phases,
        prediction=sitk.ReadImage(str(prediction_path)),
        corrected=corrected,
        model_versions=models,
        input_ids=input_ids,
    )
