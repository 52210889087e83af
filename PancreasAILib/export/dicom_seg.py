"""DICOM SEG (highdicom) referencing the source CT series, so PACS and Slicer show it on the images.

Choices the rest of the team relies on:
- BINARY segmentation (not the 2024 LABELMAP SOP class, which few viewers read yet), AUTOMATIC
  algorithm type with an AlgorithmIdentificationSequence, SNOMED CT codes from `labels.LABELS`.
- One segment per label that is present; segments are numbered 1, 2, ... in label order, so an
  empty tumour is simply absent and a pancreas-only result has one segment. Readers must identify
  segments by their property type (or label), never by segment number (`read_dicom_seg_labels` does).
  Empty frames are omitted, as highdicom does by default. An all-background label map cannot be
  written (a SEG needs at least one segment): `EmptySegmentationError`.
- The label map must lie on the source series' grid: every source slice's pixels must land on voxel
  centres of the label map (any permutation or flip of the axes is fine); otherwise
  `SourceGridMismatchError`. Each source slice's frame is taken by its own position, so file
  names and file order do not matter.
- Patient and study attributes are copied from the source by highdicom, as the standard requires for
  the SEG to join the study; nothing else from the source headers is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from PancreasAILib import __version__
from PancreasAILib.export.grid import ijk_to_lps, plane_mapping
from PancreasAILib.export.labels import (
    LABELS,
    TYPE_CODE_TO_LABEL,
    Code,
    LabelInfo,
    check_label_map,
    label_for_name,
)

SEG_SERIES_NUMBER = 9901  # high, so the SEG sorts after the acquired series in PACS lists


class SourceGridMismatchError(ValueError):
    """The label map is not on the grid of the source DICOM series, so a SEG cannot reference it."""


class EmptySegmentationError(ValueError):
    """All voxels are background: a DICOM SEG needs at least one segment."""


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_description(
    number: int, label: LabelInfo, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.name,
        segmented_property_category=_coded(label.category),
        segmented_property_type=_coded(label.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=f"PancreasAI {label.name}",
        anatomic_regions=[_coded(label.anatomic_region)] if label.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(*label.color_uint8),
    )


def _plane_of(ds: pydicom.Dataset) -> tuple[list[float], list[float], list[float], list[float], int, int]:
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    return (
        [float(v) for v in ds.ImagePositionPatient],
        orientation[:3],
        orientation[3:],
        [float(v) for v in ds.PixelSpacing],
        int(ds.Rows),
        int(ds.Columns),
    )


def _frames_on_source(
    array_kji: np.ndarray, labels: sitk.Image, sources: Sequence[pydicom.Dataset], names: Sequence[str]
) -> np.ndarray:
    """The label map resliced onto each source slice, exactly: shape (slices, rows, columns)."""
    matrix = ijk_to_lps(labels)
    size_ijk = labels.GetSize()
    frames = []
    hit = np.zeros(array_kji.shape, dtype=bool)
    for ds, name in zip(sources, names, strict=True):
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise SourceGridMismatchError(
                f"{name} is a multi-frame image; only single-frame series are supported."
            )
        try:
            plane = _plane_of(ds)
        except AttributeError as err:
            raise SourceGridMismatchError(f"{name} lacks image plane attributes ({err}).") from err
        mapping = plane_mapping(matrix, *plane)
        if mapping is None or not mapping.inside(size_ijk):
            raise SourceGridMismatchError(
                f"The label map is not on the grid of the source series: the pixels of {name} do not fall on "
                "its voxel centres. Write the DICOM SEG only for labels on the source series' own grid "
                "(the reference phase as loaded), or export NIfTI/.seg.nrrd instead."
            )
        kji = mapping.indices()
        frames.append(array_kji[kji])
        hit[kji] = True
    if not hit.all():
        raise SourceGridMismatchError(
            f"The source series covers only {int(hit.sum())} of the label map's {hit.size} voxels; "
            "pass every file of the reference series (a slice is missing or the series differs)."
        )
    return np.stack(frames)


def _with_sop_class(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """Fill an empty SOPClassUID from the file meta (some anonymisers blank it; highdicom needs it)."""
    if not dataset.get("SOPClassUID"):
        meta = getattr(dataset, "file_meta", None)
        media = meta.get("MediaStorageSOPClassUID") if meta is not None else None
        if not media:
            raise SourceGridMismatchError(
                "The source DICOM files name no SOP class; a DICOM SEG cannot reference them."
            )
        dataset.SOPClassUID = media
    return dataset


def write_dicom_seg(
    path: Path,
    labels: sitk.Image,
    source_files: Sequence[Path],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "PancreasAI segmentation",
) -> Path:
    """Write the label map as a DICOM SEG referencing `source_files` (the series it was computed on)."""
    path = Path(path)
    if not source_files:
        raise SourceGridMismatchError(
            "No source DICOM files were given; a DICOM SEG must reference its images."
        )
    array_kji = check_label_map(labels)
    sources = [_with_sop_class(pydicom.dcmread(str(f), stop_before_pixels=True)) for f in source_files]
    names = [Path(f).name for f in source_files]
    frames = _frames_on_source(array_kji, labels, sources, names)
    present = [label for label in LABELS if np.any(frames == label.value)]
    if not present:
        raise EmptySegmentationError(
            "The label map is all background; there is no segment to write as DICOM SEG."
        )
    segment_frames = np.zeros(frames.shape, dtype=np.uint8)
    for number, label in enumerate(present, start=1):
        segment_frames[frames == label.value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(n, label, algorithm) for n, label in enumerate(present, 1)],
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="PancreasAI",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"PancreasAI {__version__}; {algorithm_name} {algorithm_version}"[:64],
        device_serial_number="none",
        content_label="PANCREASAI",
        content_description="Research use only, not for clinical use"[:64],
        omit_empty_frames=True,
    )
    seg.SeriesDescription = series_description[:64]
    seg.save_as(str(path))
    return path


def _segment_value(item: pydicom.Dataset) -> int | None:
    value = label_for_name(str(getattr(item, "SegmentLabel", "")))
    if value is not None:
        return value
    types = getattr(item, "SegmentedPropertyTypeCodeSequence", None)
    return TYPE_CODE_TO_LABEL.get(str(types[0].CodeValue)) if types else None


def read_dicom_seg_labels(path: Path, reference: sitk.Image) -> sitk.Image:
    """Read a DICOM SEG back as our uint8 label map on `reference` (the source series' grid).

    Frames are placed by their own plane positions, segments identified by label or property type.
    """
    seg = hd.seg.segread(str(path))
    if str(seg.SegmentationType) not in ("BINARY", "FRACTIONAL"):
        raise ValueError(f"{path}: segmentation type {seg.SegmentationType} is not supported.")
    number_to_label = {int(item.SegmentNumber): _segment_value(item) for item in seg.SegmentSequence}
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    matrix = ijk_to_lps(reference)
    out = np.zeros(tuple(reversed(reference.GetSize())), dtype=np.uint8)
    pixels = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    threshold = (
        0.5 * float(getattr(seg, "MaximumFractionalValue", 1)) if seg.SegmentationType == "FRACTIONAL" else 0
    )
    order = sorted(range(len(pixels)), key=lambda n: _frame_segment(seg, n, number_to_label))  # tumour last
    for n in order:
        value = _frame_segment(seg, n, number_to_label)
        if value == 0:
            continue
        frame = seg.PerFrameFunctionalGroupsSequence[n]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        mapping = plane_mapping(
            matrix, position, orientation[:3], orientation[3:], spacing, int(seg.Rows), int(seg.Columns)
        )
        if mapping is None or not mapping.inside(reference.GetSize()):
            raise SourceGridMismatchError(f"Frame {n + 1} of {path} does not lie on the reference grid.")
        mask = pixels[n] > threshold
        k, j, i = mapping.indices()
        out[k[mask], j[mask], i[mask]] = value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image


def _frame_segment(seg: hd.seg.Segmentation, n: int, number_to_label: dict[int, int | None]) -> int:
    number = int(
        seg.PerFrameFunctionalGroupsSequence[n].SegmentIdentificationSequence[0].ReferencedSegmentNumber
    )
    return number_to_label.get(number) or 0
