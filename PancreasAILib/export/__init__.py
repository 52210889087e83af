"""Outputs of a case: label map (NIfTI, Slicer .seg.nrrd, DICOM SEG), heatmap, report and overview.

The label contract (0 background, 1 pancreas, 2 tumour) and its terminology live in `labels`;
`write_case_outputs` writes the whole folder atomically. Research use only, not for clinical use.
"""

from PancreasAILib.export.dicom_seg import (
    EmptySegmentationError,
    SourceGridMismatchError,
    read_dicom_seg_labels,
    write_dicom_seg,
)
from PancreasAILib.export.grid import GeometryInfo, GeometryMismatchError, same_grid
from PancreasAILib.export.heatmap import summarize_heatmap, write_heatmap
from PancreasAILib.export.labels import (
    BACKGROUND,
    LABELS,
    PANCREAS,
    TUMOR,
    Code,
    LabelInfo,
    check_label_map,
    label_info,
    write_label_map,
)
from PancreasAILib.export.overview import render_overview
from PancreasAILib.export.report import (
    REPORT_SCHEMA_VERSION,
    AlignmentInfo,
    HeatmapInfo,
    Lesion,
    ModelInfo,
    Report,
    ReportValidationError,
    VesselExclusionInfo,
    assert_no_phi,
    find_phi,
    validate_report,
)
from PancreasAILib.export.seg_nrrd import read_seg_nrrd_labels, slicer_terminology_string, write_seg_nrrd
from PancreasAILib.export.writer import OutputPaths, write_case_outputs

__all__ = [
    "BACKGROUND",
    "LABELS",
    "PANCREAS",
    "REPORT_SCHEMA_VERSION",
    "TUMOR",
    "AlignmentInfo",
    "Code",
    "EmptySegmentationError",
    "GeometryInfo",
    "GeometryMismatchError",
    "HeatmapInfo",
    "LabelInfo",
    "Lesion",
    "ModelInfo",
    "OutputPaths",
    "Report",
    "ReportValidationError",
    "SourceGridMismatchError",
    "VesselExclusionInfo",
    "assert_no_phi",
    "check_label_map",
    "find_phi",
    "label_info",
    "read_dicom_seg_labels",
    "read_seg_nrrd_labels",
    "render_overview",
    "same_grid",
    "slicer_terminology_string",
    "summarize_heatmap",
    "validate_report",
    "write_case_outputs",
    "write_dicom_seg",
    "write_heatmap",
    "write_label_map",
    "write_seg_nrrd",
]
