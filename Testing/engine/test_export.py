"""Label contract, NIfTI / .seg.nrrd round trips in physical space, heatmap output and report schema."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from PancreasAILib.export import (
    LABELS,
    REPORT_SCHEMA_VERSION,
    AlignmentInfo,
    GeometryMismatchError,
    HeatmapInfo,
    Lesion,
    ModelInfo,
    Report,
    ReportValidationError,
    assert_no_phi,
    find_phi,
    read_seg_nrrd_labels,
    slicer_terminology_string,
    summarize_heatmap,
    validate_report,
    write_heatmap,
    write_label_map,
    write_seg_nrrd,
)
from PancreasAILib.export.grid import GeometryInfo


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


DIRECTIONS = {
    "lps_identity": np.eye(3),
    "ras_flipped": np.diag([-1.0, -1.0, 1.0]),
    "z_flipped": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rotation(np.radians(12.0), np.radians(25.0)),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
}


def make_labels(direction: np.ndarray, size=(40, 34, 18)) -> sitk.Image:
    """A pancreas blob with a tumour inside it, on an anisotropic grid with the given direction."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    array = np.zeros(tuple(reversed(size)), np.uint8)
    array[((i - 20) / 12.0) ** 2 + ((j - 15) / 6.0) ** 2 + ((k - 9) / 5.0) ** 2 <= 1] = 1
    array[((i - 24) / 4.0) ** 2 + ((j - 16) / 3.0) ** 2 + ((k - 10) / 2.5) ** 2 <= 1] = 2
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.78, 0.91, 2.5))
    image.SetOrigin((-123.4, 56.7, -301.25))
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return image


def labelled_points(image: sitk.Image) -> list[tuple[tuple[float, ...], int]]:
    array = sitk.GetArrayViewFromImage(image)
    return [
        (image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))), int(array[k, j, i]))
        for k, j, i in zip(*np.nonzero(array), strict=True)
    ]


def assert_same_in_physical_space(original: sitk.Image, result: sitk.Image) -> None:
    """Every labelled voxel of `original` is found, with its label, at the same LPS point in `result`."""
    result_array = sitk.GetArrayViewFromImage(result)
    points = labelled_points(original)
    assert points
    for point, value in points:
        index = result.TransformPhysicalPointToContinuousIndex(point)
        assert np.allclose(index, np.round(index), atol=1e-3), "voxel centres moved"
        i, j, k = (round(v) for v in index)
        assert result_array[k, j, i] == value
    assert int((result_array > 0).sum()) == len(points)


def assert_identical(a: sitk.Image, b: sitk.Image, atol: float = 0.0) -> None:
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    assert a.GetSize() == b.GetSize()
    for get in (sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
        assert np.allclose(get(a), get(b), atol=atol, rtol=0), get.__name__


# --- label contract ---------------------------------------------------------------------------------


def test_label_table_is_the_contract():
    assert [(label.value, label.name) for label in LABELS] == [(1, "Pancreas"), (2, "Tumor")]
    pancreas, tumour = LABELS
    assert (pancreas.category.value, pancreas.type.value) == ("123037004", "15776009")
    assert (tumour.category.value, tumour.type.value, tumour.anatomic_region.value) == (
        "49755003",
        "4147007",
        "15776009",
    )
    assert tumour.color[0] > 0.8 and tumour.color[1] < 0.2
    assert slicer_terminology_string(pancreas) == (
        "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
        "~SCT^15776009^Pancreas~^^~Anatomic codes - DICOM master list~^^~^^"
    )


def test_label_map_rejects_values_outside_the_contract(tmp_path):
    image = make_labels(np.eye(3))
    bad = sitk.Cast(image, sitk.sitkInt16) * 3  # values 0, 3, 6
    with pytest.raises(ValueError, match="outside the contract"):
        write_label_map(tmp_path / "bad.nii.gz", bad)
    with pytest.raises(ValueError, match="3D scalar"):
        write_label_map(tmp_path / "bad2.nii.gz", sitk.Image(8, 8, sitk.sitkUInt8))
    assert not list(tmp_path.iterdir())


def test_label_map_is_uint8_nifti_with_geometry(tmp_path):
    # A float input with integral values is accepted and stored as uint8.
    image = sitk.Cast(make_labels(DIRECTIONS["oblique"]), sitk.sitkFloat32)
    path = write_label_map(tmp_path / "labels.nii.gz", image)
    back = sitk.ReadImage(str(path))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert_identical(back, sitk.Cast(image, sitk.sitkUInt8), atol=1e-5)


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_nifti_to_seg_nrrd_to_label_map_is_identical(tmp_path, name):
    original = make_labels(DIRECTIONS[name])
    nifti = sitk.ReadImage(str(write_label_map(tmp_path / "labels.nii.gz", original)))
    seg_path = write_seg_nrrd(tmp_path / "labels.seg.nrrd", nifti)
    own_grid = read_seg_nrrd_labels(seg_path)
    assert own_grid.GetPixelID() == sitk.sitkUInt8
    assert_identical(own_grid, nifti, atol=1e-9)  # NRRD stores the NIfTI geometry exactly
    on_reference = read_seg_nrrd_labels(seg_path, original)
    assert_identical(on_reference, original)
    assert_same_in_physical_space(original, own_grid)
    assert_same_in_physical_space(original, on_reference)


def test_seg_nrrd_carries_slicer_segments(tmp_path):
    labels = make_labels(np.eye(3))
    array = sitk.GetArrayFromImage(labels)
    array[array == 2] = 1  # no tumour: the tumour segment must still be there, empty
    empty_tumour = sitk.GetImageFromArray(array)
    empty_tumour.CopyInformation(labels)
    seg = slicerio.read_segmentation(str(write_seg_nrrd(tmp_path / "x.seg.nrrd", empty_tumour)))
    by_name = {s["name"]: s for s in seg["segments"]}
    assert set(by_name) == {"Pancreas", "Tumor"}
    assert by_name["Pancreas"]["labelValue"] == 1 and by_name["Tumor"]["labelValue"] == 2
    assert by_name["Pancreas"]["id"] == "pancreas"
    assert by_name["Tumor"]["terminology"]["type"] == ["SCT", "4147007", "Mass"]
    assert by_name["Tumor"]["terminology"]["anatomicRegion"] == ["SCT", "15776009", "Pancreas"]
    assert np.allclose(by_name["Tumor"]["color"], LABELS[1].color, atol=1e-5)
    header = nrrd.read_header(str(tmp_path / "x.seg.nrrd"))
    assert header["space"] == "left-posterior-superior"
    assert (
        "TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004"
        in (header["Segment0_Tags"])
    )


def test_reads_ras_space_cropped_and_layered_files_from_slicer(tmp_path):
    """Slicer may crop to the segments' extent, store overlapping segments as layers, or say RAS."""
    original = make_labels(DIRECTIONS["ras_flipped"])
    array_ijk = sitk.GetArrayFromImage(original).transpose(2, 1, 0)
    lo = [int(v.min()) for v in np.nonzero(array_ijk)]
    hi = [int(v.max()) + 1 for v in np.nonzero(array_ijk)]
    crop = array_ijk[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    matrix = np.eye(4)
    direction = np.array(original.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = direction * np.array(original.GetSpacing())
    matrix[:3, 3] = original.TransformIndexToPhysicalPoint(tuple(lo))
    layers = np.stack([(crop > 0).astype(np.uint8), (crop == 2).astype(np.uint8)])  # overlapping segments
    ras = np.diag([-1.0, -1.0, 1.0])
    header = {
        "space": "right-anterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.vstack([[np.nan] * 3, (ras @ matrix[:3, :3]).T]),
        "space origin": ras @ matrix[:3, 3],
        "Segment0_ID": "Segment_1",
        "Segment0_Name": "pancreas",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment1_ID": "Segment_2",
        "Segment1_Name": "Tumour",
        "Segment1_LabelValue": "1",
        "Segment1_Layer": "1",
        "Segment2_ID": "Segment_3",
        "Segment2_Name": "vessel note",
        "Segment2_LabelValue": "2",
        "Segment2_Layer": "0",
    }
    path = tmp_path / "corrected.seg.nrrd"
    nrrd.write(str(path), layers, header)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_seg_nrrd_labels(path, original)
    assert any("vessel note" in str(w.message) for w in caught)
    assert_identical(back, original)


# --- heatmap ----------------------------------------------------------------------------------------


def test_heatmap_written_on_reference_grid_or_zeros(tmp_path):
    reference = make_labels(DIRECTIONS["z_flipped"])
    zeros = sitk.ReadImage(str(write_heatmap(tmp_path / "h0.nii.gz", None, reference)))
    assert zeros.GetPixelID() == sitk.sitkFloat32 and not sitk.GetArrayViewFromImage(zeros).any()
    assert_identical(zeros, sitk.Cast(reference, sitk.sitkFloat32) * 0, atol=1e-5)
    heat = sitk.Cast(reference, sitk.sitkFloat64) * 0.25
    back = sitk.ReadImage(str(write_heatmap(tmp_path / "h.nii.gz", heat, reference)))
    assert np.allclose(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(heat))
    shifted = sitk.Image(heat)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(GeometryMismatchError, match=r"heatmap is not on the reference grid.*origin"):
        write_heatmap(tmp_path / "h2.nii.gz", shifted, reference)
    info = summarize_heatmap(heat, reference)
    assert info.computed and info.peak_value == pytest.approx(0.5)
    array = sitk.GetArrayViewFromImage(reference)
    idx = reference.TransformPhysicalPointToIndex(info.peak_mm)
    assert array[idx[2], idx[1], idx[0]] == 2
    assert summarize_heatmap(None) == HeatmapInfo(
        computed=False, peak_value=None, peak_mm=None, summary="not computed"
    )


# --- report -----------------------------------------------------------------------------------------


def full_report() -> Report:
    return Report(
        reference_phase="venous",
        inputs={"venous": {"kind": "dicom", "name": None, "patient_key": "ab12cd34", "num_slices": 18}},
        phases={"venous": {"phase": "venous", "confidence": 0.93, "evidence": ["SeriesDescription 'PV'"]}},
        reference_geometry=GeometryInfo.from_image(make_labels(DIRECTIONS["oblique"])),
        alignment=[
            AlignmentInfo(
                phase="arterial",
                method="rigid",
                metric="mattes_mi",
                similarity_before=-0.31,
                similarity_after=-0.62,
                translation_mm=(1.5, -2.0, 0.25),
                rotation_deg=1.1,
            )
        ],
        models=[ModelInfo(name="stage1", version="0.1", sha256="0" * 64)],
        segmentation_status="done",
        pdac_likelihood=0.82,
        lesions=[
            Lesion(
                id=1,
                confidence=0.9,
                volume_ml=3.2,
                longest_axial_diameter_mm=21.5,
                centroid_mm=(12.0, -30.5, 101.25),
            )
        ],
        heatmap=HeatmapInfo(computed=True, peak_value=0.7, peak_mm=(1.0, 2.0, 3.0), summary="peak 0.7"),
        timings_s={"load": 1.25, "align": 3.5},
        warnings=["alignment of arterial looks poor"],
    )


def test_report_json_round_trip():
    report = full_report()
    text = report.to_json()
    data = json.loads(text)
    assert data["schema_version"] == REPORT_SCHEMA_VERSION
    assert data["lesions"][0] == {
        "id": 1,
        "confidence": 0.9,
        "volume_ml": 3.2,
        "longest_axial_diameter_mm": 21.5,
        "centroid_mm": [12.0, -30.5, 101.25],
        "network_confidence": None,
        "attenuation_hu": None,
        "hypoattenuating": None,
    }
    back = Report.from_json(text)
    assert back == report
    assert isinstance(back.lesions[0], Lesion) and isinstance(back.lesions[0].centroid_mm, tuple)
    assert isinstance(back.reference_geometry, GeometryInfo) and isinstance(back.alignment[0], AlignmentInfo)
    assert Report.from_json(Report(reference_phase="arterial").to_json()).segmentation_status == "not_run"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("lesions"), r"report\.lesions is missing"),
        (lambda d: d["lesions"][0].update(volume_ml="3 mL"), r"lesions\[0\]\.volume_ml .*number"),
        (lambda d: d["lesions"][0].update(centroid_mm=[1.0, 2.0]), r"centroid_mm must have 3 items"),
        (lambda d: d["lesions"][0].update(id=1.5), r"lesions\[0\]\.id must be an integer"),
        (lambda d: d.update(pdac_likelihood=1.7), r"pdac_likelihood must lie in \[0, 1\]"),
        (lambda d: d.update(segmentation_status="maybe"), r"segmentation_status must be one of"),
        (lambda d: d.update(schema_version="2.0"), r"schema_version '2.0'"),
        (lambda d: d.update(patient_name="Doe"), r"unknown field\(s\): patient_name"),
        (lambda d: d["heatmap"].update(computed="yes"), r"heatmap\.computed must be true or false"),
        (lambda d: d["timings_s"].update(load=float("nan")), r"timings_s\['load'\] .*finite"),
        (lambda d: d["models"][0].pop("sha256"), r"models\[0\]\.sha256 is missing"),
    ],
)
def test_report_validation_names_the_field(mutate, message):
    data = full_report().to_dict()
    validate_report(json.loads(json.dumps(data)))
    mutate(data)
    with pytest.raises(ReportValidationError, match=message):
        validate_report(data)


def test_report_refuses_to_serialise_invalid_values():
    with pytest.raises(ReportValidationError):
        dataclasses.replace(full_report(), pdac_likelihood=float("nan")).to_json()
    with pytest.raises(ReportValidationError, match="not valid JSON"):
        Report.from_json("{not json")


def test_phi_guard_finds_identifiers_and_uids():
    data = full_report().to_dict()
    assert_no_phi(data, ["Doe^Jane", "PID-0042731"])
    data["warnings"].append("series 1.2.840.113619.2.55.3.604688119 was skipped")
    data["inputs"]["venous"]["series_description"] = "CT ABD doe^jane"
    found = find_phi(data, ["Doe^Jane"])
    assert any("DICOM UID" in f for f in found) and any("'doe^jane'" in f for f in found)
    with pytest.raises(AssertionError, match="identifying data"):
        assert_no_phi(json.dumps(data), ["Doe^Jane"])


def test_lesion_centroid_round_trip_is_lps(tmp_path: Path):
    """A lesion centroid computed from the label map lands inside the tumour of the written label map."""
    labels = make_labels(DIRECTIONS["ras_flipped"])
    array = sitk.GetArrayViewFromImage(labels)
    k, j, i = (float(np.mean(v)) for v in np.nonzero(array == 2))
    centroid = labels.TransformContinuousIndexToPhysicalPoint((i, j, k))
    report = dataclasses.replace(full_report(), lesions=[Lesion(1, 0.9, 1.0, 10.0, tuple(centroid))])
    back = Report.from_json(report.to_json())
    nifti = sitk.ReadImage(str(write_label_map(tmp_path / "l.nii.gz", labels)))
    idx = nifti.TransformPhysicalPointToIndex(back.lesions[0].centroid_mm)
    assert sitk.GetArrayViewFromImage(nifti)[idx[2], idx[1], idx[0]] == 2
