"""Write one case's output folder, all or nothing.

The folder is assembled in a hidden staging folder (`atomic_output_dir`) and renamed into place only
when every file is complete, each file itself written under a temporary name; an existing non-empty
folder is refused unless `overwrite`. Inputs are checked before anything is written, so a wrong grid
fails fast with a clear message instead of producing outputs that do not overlay the images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from PancreasAILib.atomic import atomic_output_dir, write_file_atomically, write_text_atomically
from PancreasAILib.export.dicom_seg import EmptySegmentationError, SourceGridMismatchError, write_dicom_seg
from PancreasAILib.export.grid import GeometryInfo, GeometryMismatchError, require_same_grid
from PancreasAILib.export.heatmap import heatmap_on_reference, write_heatmap
from PancreasAILib.export.labels import as_uint8_labels, write_label_map
from PancreasAILib.export.overview import render_overview
from PancreasAILib.export.report import Report, validate_report
from PancreasAILib.export.seg_nrrd import write_seg_nrrd
from PancreasAILib.phases import Phase

LABELS_NIFTI = "labels.nii.gz"
LABELS_SEG_NRRD = "labels.seg.nrrd"
LABELS_DICOM_SEG = "labels.dcm"
HEATMAP_NIFTI = "heatmap.nii.gz"
REPORT_JSON = "report.json"
OVERVIEW_PNG = "overview.png"
STANDARD_NAMES = frozenset(
    {LABELS_NIFTI, LABELS_SEG_NRRD, LABELS_DICOM_SEG, HEATMAP_NIFTI, REPORT_JSON, OVERVIEW_PNG}
)


@dataclass(frozen=True)
class OutputPaths:
    """Where each output landed (final paths inside `out_dir`); `labels_dicom_seg` is None when omitted."""

    out_dir: Path
    labels_nifti: Path
    labels_seg_nrrd: Path
    heatmap: Path
    report: Path
    overview: Path
    labels_dicom_seg: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)


def _check_extra_names(extra_files: Mapping[str, Callable[[Path], None]]) -> None:
    for name in extra_files:
        if not name or Path(name).name != name or name.startswith(".") or name in STANDARD_NAMES:
            raise ValueError(
                f"Extra output name {name!r} must be a plain file name, not hidden and not one of "
                f"{', '.join(sorted(STANDARD_NAMES))}."
            )


def _check_inputs(
    reference: sitk.Image,
    labels: sitk.Image,
    heatmap: sitk.Image | None,
    images: Mapping[Phase, sitk.Image],
    report: Report,
) -> None:
    require_same_grid(labels, reference, "label map")
    if heatmap is not None:
        require_same_grid(heatmap, reference, "heatmap")
    for phase, image in images.items():
        require_same_grid(image, reference, f"aligned {phase} image")
    if report.heatmap.computed != (heatmap is not None):
        raise ValueError(
            "report.heatmap.computed says "
            f"{report.heatmap.computed} but a heatmap was {'given' if heatmap is not None else 'not given'}; "
            "fill it with export.summarize_heatmap(heatmap, labels)."
        )
    if report.reference_geometry is not None and not report.reference_geometry.matches(reference):
        raise GeometryMismatchError("report.reference_geometry does not describe the reference image.")


def _reference_phase(report: Report) -> Phase:
    try:
        return Phase(report.reference_phase)
    except ValueError:
        return Phase.VENOUS


def write_case_outputs(
    out_dir: Path,
    *,
    reference: sitk.Image,
    labels: sitk.Image,
    heatmap: sitk.Image | None,
    report: Report,
    images: Mapping[Phase, sitk.Image],
    source_dicom_files: Sequence[Path] | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    title: str = "PancreasAI",
    truth: sitk.Image | None = None,
    algorithm_name: str = "PancreasAI",
    algorithm_version: str | None = None,
) -> OutputPaths:
    """Write labels (NIfTI, .seg.nrrd, DICOM SEG when possible), heatmap, report and overview atomically.

    labels.dcm is written only when `source_dicom_files` are given and the labels lie on their grid;
    otherwise it is omitted and the report says why (`notes`, or `warnings` for a DICOM input whose
    grid does not match). `extra_files` maps file names to writers called with a temporary path.
    """
    extra_files = dict(extra_files or {})
    _check_extra_names(extra_files)
    _check_inputs(reference, labels, heatmap, images, report)
    validate_report(report.to_dict())
    labels_u8 = as_uint8_labels(labels)  # validates values before any file exists
    labels_u8.CopyInformation(reference)
    heatmap_ref = heatmap_on_reference(heatmap, reference)
    notes, warnings = list(report.notes), list(report.warnings)
    version = algorithm_version or report.pancreasai_version
    out_dir = Path(out_dir).absolute()

    with atomic_output_dir(out_dir, overwrite) as staging:
        written: list[str] = []

        def put(name: str, writer: Callable[[Path], object]) -> None:
            write_file_atomically(staging / name, writer)
            written.append(name)

        put(LABELS_NIFTI, lambda p: write_label_map(p, labels_u8))
        put(LABELS_SEG_NRRD, lambda p: write_seg_nrrd(p, labels_u8))
        dicom_written = False
        if source_dicom_files:
            try:
                put(
                    LABELS_DICOM_SEG,
                    lambda p: write_dicom_seg(
                        p,
                        labels_u8,
                        source_dicom_files,
                        algorithm_name=algorithm_name,
                        algorithm_version=version,
                    ),
                )
                dicom_written = True
            except SourceGridMismatchError as err:
                warnings.append(f"{LABELS_DICOM_SEG} was not written: {err}")
            except EmptySegmentationError as err:
                notes.append(f"{LABELS_DICOM_SEG} was not written: {err}")
        else:
            notes.append(f"{LABELS_DICOM_SEG} was not written: the reference phase was not read from DICOM.")
        put(HEATMAP_NIFTI, lambda p: write_heatmap(p, heatmap_ref, reference))
        shown = dict(images) or {_reference_phase(report): reference}
        put(OVERVIEW_PNG, lambda p: render_overview(p, shown, labels_u8, heatmap, title=title, truth=truth))
        for name, writer in extra_files.items():
            put(name, writer)
        final = dataclasses.replace(
            report,
            reference_geometry=report.reference_geometry or GeometryInfo.from_image(reference),
            notes=notes,
            warnings=warnings,
            outputs=[*written, REPORT_JSON],
        )
        write_text_atomically(staging / REPORT_JSON, final.to_json())

    return OutputPaths(
        out_dir=out_dir,
        labels_nifti=out_dir / LABELS_NIFTI,
        labels_seg_nrrd=out_dir / LABELS_SEG_NRRD,
        heatmap=out_dir / HEATMAP_NIFTI,
        report=out_dir / REPORT_JSON,
        overview=out_dir / OVERVIEW_PNG,
        labels_dicom_seg=out_dir / LABELS_DICOM_SEG if dicom_written else None,
        extra={name: out_dir / name for name in extra_files},
    )
