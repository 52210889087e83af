"""DICOM SEG for a DICOM input: highdicom reads it back and every frame matches the mask of its source slice."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from PancreasAILib.dicom_write import SeriesHeader, write_dicom_series
from PancreasAILib.export import (
    EmptySegmentationError,
    SourceGridMismatchError,
    read_dicom_seg_labels,
    write_dicom_seg,
)


def _rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


DIRECTIONS = {
    "axial_identity": np.eye(3),
    "flipped_rows_and_z": np.diag([-1.0, 1.0, -1.0]),
    "oblique_in_plane": _rotation_z(17.0),
}

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042731"


def make_case(tmp_path, direction: np.ndarray, *, tumour: bool = True, seed: int = 7):
    """A small CT volume written as a DICOM series with shuffled file names, and labels on its grid."""
    size = (36, 30, 12)
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    labels = np.zeros(tuple(reversed(size)), np.uint8)
    labels[((i - 17) / 10.0) ** 2 + ((j - 14) / 5.0) ** 2 + ((k - 6) / 4.0) ** 2 <= 1] = 1
    if tumour:
        labels[((i - 20) / 3.5) ** 2 + ((j - 14) / 2.5) ** 2 + ((k - 7) / 2.0) ** 2 <= 1] = 2
    ct = sitk.GetImageFromArray((40.0 + 60.0 * (labels > 0) - 20.0 * (labels == 2)).astype(np.float32))
    for image in (ct,):
        image.SetSpacing((0.8, 0.75, 2.5))
        image.SetOrigin((-14.0, 20.5, -88.0))
        image.SetDirection(tuple(direction.ravel()))
    files = write_dicom_series(
        ct,
        tmp_path / "ct",
        SeriesHeader(patient_name=PATIENT_NAME, patient_id=PATIENT_ID, series_description="PV abdomen"),
        shuffle_names_seed=seed,
    )
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(ct)
    return ct, label_image, files


def frames_by_source_instance(seg_path, files) -> np.ndarray:
    """Read with highdicom only: per source SOP instance (in slice order), the label of each pixel."""
    seg = hd.seg.segread(str(seg_path))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    numbers = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    number_to_label = {
        int(item.SegmentNumber): {"Pancreas": 1, "Tumor": 2}[item.SegmentLabel]
        for item in seg.SegmentSequence
    }
    out = np.zeros(numbers.shape, np.uint8)
    for number, label in number_to_label.items():
        out[numbers == number] = label
    return out


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_dicom_seg_frames_match_the_mask_per_source_instance(tmp_path, name):
    ct, labels, files = make_case(tmp_path, DIRECTIONS[name])
    shuffled = list(np.random.default_rng(3).permutation(np.array(files, dtype=object)))
    path = write_dicom_seg(
        tmp_path / "labels.dcm", labels, shuffled, algorithm_name="PancreasAI test", algorithm_version="0.0.1"
    )
    expected = sitk.GetArrayFromImage(labels)  # write_dicom_series returns files in slice order
    assert np.array_equal(frames_by_source_instance(path, files), expected)
    assert np.array_equal(sitk.GetArrayFromImage(read_dicom_seg_labels(path, ct)), expected)


def test_dicom_seg_header_is_automatic_coded_and_references_the_series(tmp_path):
    _, labels, files = make_case(tmp_path, np.eye(3))
    path = write_dicom_seg(
        tmp_path / "labels.dcm",
        labels,
        files,
        algorithm_name="PancreasAI cascade",
        algorithm_version="1.2.3",
        series_description="PancreasAI test seg",
    )
    seg = pydicom.dcmread(path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "PancreasAI test seg"
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    pancreas, tumour = seg.SegmentSequence
    assert (pancreas.SegmentLabel, tumour.SegmentLabel) == ("Pancreas", "Tumor")
    for item in (pancreas, tumour):
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "PancreasAI cascade"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "1.2.3"
    assert pancreas.SegmentedPropertyTypeCodeSequence[0].CodeValue == "15776009"
    assert pancreas.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "4147007"
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert tumour.AnatomicRegionSequence[0].CodeValue == "15776009"
    assert "ProtocolName" not in seg and "PV abdomen" not in str(seg.get("SeriesDescription"))


def test_empty_tumour_is_omitted_and_all_background_is_refused(tmp_path):
    _, labels, files = make_case(tmp_path, np.eye(3), tumour=False)
    path = write_dicom_seg(tmp_path / "labels.dcm", labels, files, algorithm_name="x", algorithm_version="1")
    seg = pydicom.dcmread(path)
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["Pancreas"]
    assert np.array_equal(frames_by_source_instance(path, files), sitk.GetArrayFromImage(labels))
    empty = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(labels)
    with pytest.raises(EmptySegmentationError, match="all background"):
        write_dicom_seg(tmp_path / "empty.dcm", empty, files, algorithm_name="x", algorithm_version="1")


def test_labels_on_a_permuted_view_of_the_source_grid_are_accepted(tmp_path):
    """The same voxels in another axis order (e.g. reoriented to RAS) still map exactly onto the source."""
    _, labels, files = make_case(tmp_path, np.eye(3))
    reoriented = sitk.DICOMOrient(labels, "RAI")
    assert reoriented.GetDirection() != labels.GetDirection()
    path = write_dicom_seg(
        tmp_path / "labels.dcm", reoriented, files, algorithm_name="x", algorithm_version="1"
    )
    assert np.array_equal(frames_by_source_instance(path, files), sitk.GetArrayFromImage(labels))
    assert np.array_equal(
        sitk.GetArrayFromImage(read_dicom_seg_labels(path, reoriented)), sitk.GetArrayFromImage(reoriented)
    )


def test_labels_off_the_source_grid_are_refused(tmp_path):
    _, labels, files = make_case(tmp_path, np.eye(3))
    shifted = sitk.Image(labels)
    shifted.SetOrigin(tuple(np.add(labels.GetOrigin(), [0.3, 0.0, 0.0])))
    with pytest.raises(SourceGridMismatchError, match="not on the grid of the source series"):
        write_dicom_seg(tmp_path / "a.dcm", shifted, files, algorithm_name="x", algorithm_version="1")
    with pytest.raises(SourceGridMismatchError, match="covers only"):
        write_dicom_seg(tmp_path / "b.dcm", labels, files[:-1], algorithm_name="x", algorithm_version="1")
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()
