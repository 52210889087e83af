"""Import one engine output folder into the scene: segmentation, heatmap, lesions (markups and table).

All or nothing: every node is new (named by the run's time), and when anything fails the nodes made
so far are removed again, so the scene is as it was. Names, colours and SNOMED CT codes come from
the engine's label contract (PancreasAILib/export/labels.py), never from a copy of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from PancreasAILogicLib.scene_io import LPS_TO_RAS, same_geometry, update_volume_from_image

RUN_ATTRIBUTE = "PancreasAI.Run"  # every node of a run carries the run's name
ROLE_ATTRIBUTE = "PancreasAI.Role"  # segmentation | heatmap | lesions | lesion_table
OUTPUT_DIR_ATTRIBUTE = "PancreasAI.OutputDirectory"
PDAC_ATTRIBUTE = "PancreasAI.PDACLikelihood"
HEATMAP_COLOR_NODE_NAME = "PancreasAI heatmap"
SLICER_CATEGORY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
SLICER_ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"
LESION_COLUMNS: tuple[str, ...] = (
    "Lesion",
    "Volume (mL)",
    "Longest axial diameter (mm)",
    "Confidence",
    "Vs gland (HU)",
    "R (mm)",
    "A (mm)",
    "S (mm)",
)
# Anchor colours of the heatmap ramp (transparent-black -> purple -> orange -> pale yellow, like "inferno").
HEATMAP_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.0, 0.02],
        [0.34, 0.06, 0.43, 0.0],
        [0.73, 0.21, 0.33, 0.0],
        [0.98, 0.55, 0.04, 0.0],
        [0.99, 1.0, 0.64, 0.0],
    ]
)


@dataclass
class Lesion:
    id: int
    confidence: float
    volume_ml: float
    diameter_mm: float
    centroid_ras: tuple[float, float, float]
    # Mean HU minus the rest of the gland per phase, e.g. "-22 venous" (PDAC is darker than the
    # gland); "" when the report has none (reports before schema 1.2).
    versus_gland: str = ""


@dataclass
class ImportedResults:
    run_name: str
    segmentation: object
    heatmap: object | None
    lesion_markups: object | None
    lesion_table: object | None
    report: dict
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def pdac_likelihood(self) -> float | None:
        return self.report.get("pdac_likelihood")

    @property
    def nodes(self) -> list:
        return [n for n in (self.segmentation, self.heatmap, self.lesion_markups, self.lesion_table) if n]


def _code(code) -> str:
    return f"{code.scheme}^{code.value}^{code.meaning}"


def terminology_entry(label) -> str:
    """Slicer's serialised terminology of a label (the same string the engine writes into .seg.nrrd)."""
    region = _code(label.anatomic_region) if label.anatomic_region is not None else "^^"
    return "~".join(
        [
            SLICER_CATEGORY_CONTEXT,
            _code(label.category),
            _code(label.type),
            "^^",
            SLICER_ANATOMY_CONTEXT,
            region,
            "^^",
        ]
    )


def set_terminology(segment, entry: str) -> None:
    if hasattr(segment, "SetTerminology"):  # Slicer >= 5.10
        segment.SetTerminology(entry)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)


def lesions_from_report(report: dict) -> list[Lesion]:
    lesions = []
    for item in report.get("lesions") or []:
        lps = np.asarray(item["centroid_mm"], dtype=float)
        ras = LPS_TO_RAS @ lps  # the report is in LPS (DICOM); Slicer is RAS
        lesions.append(
            Lesion(
                int(item["id"]),
                float(item["confidence"]),
                float(item["volume_ml"]),
                float(item["longest_axial_diameter_mm"]),
                tuple(float(v) for v in ras),
                versus_gland_text(item),
            )
        )
    return lesions


def versus_gland_text(item: dict) -> str:
    """'-22 arterial, +3 venous' (HU against the rest of the gland), marked when that ranked the
    lesion lower: not darker anywhere, or darker by less than the grade the release weighs over."""
    attenuation = item.get("attenuation_hu") or {}
    text = ", ".join(f"{value:+.0f} {phase}" for phase, value in attenuation.items())
    network = item.get("network_confidence")
    weighed = network is None or float(item.get("confidence", network)) < float(network)
    if attenuation and weighed and item.get("hypoattenuating") is False:
        text += " (not darker: ranked lower)"
    elif attenuation and weighed and item.get("hypoattenuating") and network is not None:
        text += " (barely darker: ranked lower)"
    return text


def report_notes(report: dict) -> list[str]:
    """What the radiologist should read beside the lesion table: the engine's warnings (e.g. a series
    that looks like another phase than the one chosen) and what the label map leaves out on purpose
    (enhanced vein taken out of the pancreas, report schema 1.3)."""
    from PancreasAILib.export.report import VesselExclusionInfo  # the engine's wording, no model code

    notes = [str(warning) for warning in report.get("warnings") or []]
    vessels = report.get("vessel_exclusion") or {}
    if vessels.get("excluded_ml"):
        line = VesselExclusionInfo(**vessels).summary()
        notes.append(line[0].upper() + line[1:] + ".")  # str.capitalize would lower "HU"
    return notes


class ResultImporter:
    """Turns an output folder into new nodes of `scene`, with `reference` as the geometry."""

    def __init__(self, scene, color_logic=None) -> None:
        self.scene = scene
        self.color_logic = color_logic  # vtkSlicerColorLogic for the colour legend (absent in slicer-core)
        self._created: list = []

    def import_folder(self, out_dir: Path, reference, run_name: str) -> ImportedResults:
        out_dir = Path(out_dir)
        report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
        labels = sitk.ReadImage(str(out_dir / "labels.nii.gz"))
        if not same_geometry(reference, labels):
            raise ValueError(
                "The engine's label map does not lie on the reference volume's grid; "
                "the results were not imported."
            )
        self._created = []
        try:
            segmentation = self._segmentation(labels, reference, run_name, report, out_dir)
            heatmap = None
            heatmap_info = report.get("heatmap") or {}
            if heatmap_info.get("computed") and (out_dir / "heatmap.nii.gz").is_file():
                heatmap = self._heatmap(
                    sitk.ReadImage(str(out_dir / "heatmap.nii.gz")), run_name, heatmap_info
                )
            lesions = lesions_from_report(report)
            markups = self._lesion_markups(lesions, run_name) if lesions else None
            table = self._lesion_table(lesions, run_name)
        except BaseException:
            for node in reversed(self._created):  # leave the scene as it was
                self.scene.RemoveNode(node)
            raise
        finally:
            created, self._created = self._created, []
        for node in created:
            node.SetAttribute(RUN_ATTRIBUTE, run_name)
            node.SetAttribute(OUTPUT_DIR_ATTRIBUTE, str(out_dir))
        return ImportedResults(run_name, segmentation, heatmap, markups, table, report, lesions)

    def _add(self, class_name: str, name: str, role: str):
        node = self.scene.AddNewNodeByClass(class_name, self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        self._created.append(node)
        return node

    def _segmentation(self, labels: sitk.Image, reference, run_name: str, report: dict, out_dir: Path):
        from PancreasAILib.export.labels import LABELS, check_label_map  # pure metadata, no model code

        array = check_label_map(labels)
        node = self._add("vtkMRMLSegmentationNode", f"PancreasAI {run_name} segmentation", "segmentation")
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        segmentation = node.GetSegmentation()
        ids = vtk.vtkStringArray()
        for label in sorted(LABELS, key=lambda item: item.value):
            if label.value != ids.GetNumberOfValues() + 1:
                raise ValueError("The label contract must number its labels 1, 2, ... without gaps.")
            segmentation.AddEmptySegment(label.segment_id, label.name, list(label.color))
            segment = segmentation.GetSegment(label.segment_id)
            segment.SetNameAutoGenerated(False)
            segment.SetColorAutoGenerated(False)
            set_terminology(segment, terminology_entry(label))
            ids.InsertNextValue(label.segment_id)  # label value N goes to the N-th segment ID
        labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # temporary, never added to the scene
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(labels)
        update_volume_from_image(labelmap, image)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node, ids):
            raise RuntimeError("Slicer could not import the label map into the segmentation.")
        if report.get("pdac_likelihood") is not None:
            node.SetAttribute(PDAC_ATTRIBUTE, f"{report['pdac_likelihood']:.4f}")
        node.SetAttribute("PancreasAI.Prediction", str(out_dir / "labels.nii.gz"))
        node.SetAttribute("PancreasAI.ReferenceVolumeID", reference.GetID())
        return node

    def heatmap_color_node(self):
        """Our colour table, made once per scene and reused (it is never edited after creation)."""
        for node in self.scene.GetNodesByClass("vtkMRMLColorTableNode"):
            if node.GetAttribute(ROLE_ATTRIBUTE) == "heatmap_colors":
                return node
        node = self._add("vtkMRMLColorTableNode", HEATMAP_COLOR_NODE_NAME, "heatmap_colors")
        node.SetTypeToUser()
        count = 256
        node.SetNumberOfColors(count)
        positions = np.linspace(0.0, 1.0, len(HEATMAP_ANCHORS))
        for index in range(count):
            t = index / (count - 1)
            rgb = [float(np.interp(t, positions, HEATMAP_ANCHORS[:, c])) for c in range(3)]
            node.SetColor(index, f"{t:.2f}", *rgb, 1.0)
        return node

    def _heatmap(self, image: sitk.Image, run_name: str, info: dict):
        node = self._add("vtkMRMLScalarVolumeNode", f"PancreasAI {run_name} heatmap", "heatmap")
        update_volume_from_image(node, sitk.Cast(image, sitk.sitkFloat32))
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.heatmap_color_node().GetID())
        peak = float(info.get("peak_value") or np.max(sitk.GetArrayViewFromImage(image)) or 1.0)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, max(peak, 1e-6))
        set_heatmap_threshold(node, 0.2 * peak)
        show_in_foreground(self.scene, node, opacity=0.5)
        if self.color_logic is not None:
            self.color_logic.AddDefaultColorLegendDisplayNode(node)
        return node

    def _lesion_markups(self, lesions: list[Lesion], run_name: str):
        node = self._add("vtkMRMLMarkupsFiducialNode", f"PancreasAI {run_name} lesions", "lesions")
        node.CreateDefaultDisplayNodes()
        for lesion in lesions:
            index = node.AddControlPoint(*lesion.centroid_ras, f"L{lesion.id}")
            node.SetNthControlPointDescription(
                index,
                f"{lesion.volume_ml:.2f} mL, {lesion.diameter_mm:.1f} mm, confidence {lesion.confidence:.2f}"
                + (f"; HU vs gland {lesion.versus_gland}" if lesion.versus_gland else ""),
            )
            node.SetNthControlPointLocked(index, True)  # a measurement, not something to drag by accident
        return node

    def _lesion_table(self, lesions: list[Lesion], run_name: str):
        node = self._add("vtkMRMLTableNode", f"PancreasAI {run_name} lesion table", "lesion_table")
        rows = [
            (f"L{le.id}", le.volume_ml, le.diameter_mm, le.confidence, le.versus_gland, *le.centroid_ras)
            for le in lesions
        ]
        text_columns = {LESION_COLUMNS.index("Lesion"), LESION_COLUMNS.index("Vs gland (HU)")}
        for c, title in enumerate(LESION_COLUMNS):
            column = vtk.vtkStringArray() if c in text_columns else vtk.vtkDoubleArray()
            column.SetName(title)
            column.SetNumberOfValues(len(rows))
            for r, row in enumerate(rows):
                column.SetValue(r, row[c])
            node.AddColumn(column)
        node.SetLocked(True)
        return node


def set_heatmap_threshold(node, threshold: float) -> None:
    """Hide heatmap voxels below `threshold` (they become transparent in the slice views)."""
    display = node.GetDisplayNode()
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(float(max(threshold, display.GetWindowLevelMax(), threshold + 1e-6)))


def show_in_foreground(scene, node, opacity: float) -> None:
    """Put a volume in the foreground layer of every slice view (the background stays as it is)."""
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetForegroundVolumeID(node.GetID() if node else None)
        composite.SetForegroundOpacity(float(opacity))


def centre_slice_views(scene, ras: tuple[float, float, float]) -> None:
    """Move every slice view so that `ras` is in the middle of it."""
    for slice_node in scene.GetNodesByClass("vtkMRMLSliceNode"):
        slice_node.JumpSliceByCentering(*ras)
