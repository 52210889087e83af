"""The output folder: all or nothing, never silently overwritten, no PHI; and the overview PNG."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from PancreasAILib.dicom_write import SeriesHeader, write_dicom_series
from PancreasAILib.errors import OutputExistsError
from PancreasAILib.export import (
    GeometryMismatchError,
    Report,
    assert_no_phi,
    read_dicom_seg_labels,
    read_seg_nrrd_labels,
    render_overview,
    summarize_heatmap,
    write_case_outputs,
)
from PancreasAILib.phases import Phase

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042731"
STANDARD = {"labels.nii.gz", "labels.seg.nrrd", "heatmap.nii.gz", "report.json", "overview.png"}


def make_case(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), size=(80, 72, 10), tumour=True):
    """A venous CT (body, pancreas, hypodense tumour), its labels, and a heatmap, all on one grid."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    labels = np.zeros(tuple(reversed(size)), np.uint8)
    labels[((i - 44) / 16.0) ** 2 + ((j - 40) / 7.0) ** 2 + ((k - 5) / 4.0) ** 2 <= 1] = 1
    if tumour:
        labels[((i - 50) / 5.0) ** 2 + ((j - 40) / 4.0) ** 2 + ((k - 5) / 2.5) ** 2 <= 1] = 2
    body = ((i - 40) / 36.0) ** 2 + ((j - 36) / 32.0) ** 2 <= 1
    ct = np.where(body, 30.0, -1000.0) + 70.0 * (labels == 1) + 10.0 * (labels == 2)
    heat = np.exp(-(((i - 50) / 6.0) ** 2 + ((j - 40) / 6.0) ** 2 + ((k - 5) / 3.0) ** 2)).astype(np.float32)
    images = []
    for array in (ct.astype(np.float32), labels, heat):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 2.5))
        image.SetOrigin((-40.0, -20.0, 100.0))
        image.SetDirection(tuple(float(v) for v in direction))
        images.append(image)
    return tuple(images)


def report_for(heatmap, labels) -> Report:
    return Report(
        reference_phase="venous",
        segmentation_status="done",
        pdac_likelihood=0.5,
        heatmap=summarize_heatmap(heatmap, labels),
        timings_s={"export": 0.1},
    )


def write(out_dir, **changes):
    ct, labels, heat = make_case()
    arguments = dict(
        reference=ct,
        labels=labels,
        heatmap=heat,
        report=report_for(heat, labels),
        images={Phase.VENOUS: ct},
        source_dicom_files=None,
    )
    arguments.update(changes)
    return write_case_outputs(out_dir, **arguments)


def folder_digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_writes_every_output_for_a_file_input(tmp_path):
    out = tmp_path / "case"
    paths = write(
        out, extra_files={"venous_aligned.nii.gz": lambda p: sitk.WriteImage(make_case()[0], str(p))}
    )
    assert {p.name for p in out.iterdir()} == STANDARD | {"venous_aligned.nii.gz"}
    assert paths.labels_dicom_seg is None and paths.extra["venous_aligned.nii.gz"].is_file()
    report = Report.from_json(paths.report.read_text())
    assert any("labels.dcm was not written" in note for note in report.notes)
    assert set(report.outputs) == STANDARD | {"venous_aligned.nii.gz"}
    assert report.heatmap.computed and report.reference_geometry.size == (80, 72, 10)
    labels = make_case()[1]
    assert np.array_equal(
        sitk.GetArrayFromImage(read_seg_nrrd_labels(paths.labels_seg_nrrd, labels)),
        sitk.GetArrayFromImage(labels),
    )
    assert sitk.ReadImage(str(paths.heatmap)).GetPixelID() == sitk.sitkFloat32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dicom_input_gets_a_dicom_seg_and_no_phi_anywhere(tmp_path):
    """Through the real loader: the SEG lands on the loaded grid; no identifier in report or file names."""
    from PancreasAILib.inputs import load_input

    ct, labels, _ = make_case(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))  # z flipped on disk
    files = write_dicom_series(
        ct,
        tmp_path / "dicom" / PATIENT_ID,
        SeriesHeader(patient_name=PATIENT_NAME, patient_id=PATIENT_ID, series_description="PV"),
        shuffle_names_seed=11,
    )
    (loaded,) = load_input(tmp_path / "dicom")
    reference = loaded.image
    on_reference = sitk.Resample(
        labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    assert int(sitk.GetArrayViewFromImage(on_reference).sum()) == int(
        sitk.GetArrayViewFromImage(labels).sum()
    )
    report = Report(reference_phase="venous", inputs={"venous": loaded.info.to_report()})
    paths = write_case_outputs(
        tmp_path / "out",
        reference=reference,
        labels=on_reference,
        heatmap=None,
        report=report,
        images={Phase.VENOUS: reference},
        source_dicom_files=loaded.info.dicom_files or files,
    )
    assert paths.labels_dicom_seg is not None
    back = read_dicom_seg_labels(paths.labels_dicom_seg, reference)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(on_reference))

    import pydicom

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    forbidden = [
        PATIENT_NAME,
        "Doe",
        PATIENT_ID,
        headers[0].StudyInstanceUID,
        headers[0].SeriesInstanceUID,
        headers[0].FrameOfReferenceUID,
        *(h.SOPInstanceUID for h in headers),
    ]
    text = paths.report.read_text()
    assert_no_phi(text, forbidden)
    assert_no_phi(json.loads(text), forbidden)
    for path in paths.out_dir.iterdir():
        assert not any(f.lower() in path.name.lower() for f in forbidden)
    assert not Report.from_json(text).heatmap.computed


def test_existing_folder_is_refused_and_untouched(tmp_path):
    out = tmp_path / "case"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    before = folder_digest(out)
    with pytest.raises(OutputExistsError, match="already exists"):
        write(out)
    assert folder_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_failure_mid_write_leaves_nothing(tmp_path):
    def broken(path):
        path.write_bytes(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write(tmp_path / "case", extra_files={"aligned.nii.gz": broken})
    assert list(tmp_path.iterdir()) == []


def test_failure_during_overwrite_keeps_the_old_results(tmp_path):
    out = tmp_path / "case"
    write(out)
    before = folder_digest(out)
    with pytest.raises(RuntimeError):
        write(
            out, overwrite=True, extra_files={"x.bin": lambda p: (_ for _ in ()).throw(RuntimeError("boom"))}
        )
    assert folder_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_overwrite_replaces_the_folder(tmp_path):
    out = tmp_path / "case"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    write(out, overwrite=True)
    assert {p.name for p in out.iterdir()} == STANDARD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_inputs_off_the_reference_grid_are_refused_before_writing(tmp_path):
    _, labels, _ = make_case()
    moved = sitk.Image(labels)
    moved.SetSpacing((1.0, 1.0, 3.0))
    with pytest.raises(GeometryMismatchError, match=r"label map is not on the reference grid.*spacing"):
        write(tmp_path / "a", labels=moved)
    with pytest.raises(GeometryMismatchError, match="heatmap"):
        write(tmp_path / "b", heatmap=sitk.Cast(moved, sitk.sitkFloat32))
    with pytest.raises(ValueError, match="outside the contract"):
        write(tmp_path / "c", labels=labels * 2)
    with pytest.raises(ValueError, match=r"report\.heatmap\.computed"):
        write(tmp_path / "d", heatmap=None)
    with pytest.raises(ValueError, match="plain file name"):
        write(tmp_path / "e", extra_files={"../escape.nii.gz": lambda p: None})
    assert list(tmp_path.iterdir()) == []


# --- overview ---------------------------------------------------------------------------------------


def _red_pixels(png) -> int:
    rgb = (imread(str(png))[..., :3] * 255).astype(int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).sum())


def test_overview_is_a_png_with_tumour_outline_only_when_a_tumour_exists(tmp_path):
    ct, labels, _ = make_case()
    _, no_tumour, _ = make_case(tumour=False)
    images = {Phase.VENOUS: ct, Phase.ARTERIAL: ct + 50}
    with_tumour = render_overview(tmp_path / "a.png", images, labels, None, title="case A")
    without = render_overview(tmp_path / "b.png", images, no_tumour, None, title="case B")
    assert with_tumour.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(str(with_tumour)).shape[:2]
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    assert width > height * 0.6  # two phase columns
    assert _red_pixels(with_tumour) > 20
    assert _red_pixels(without) == 0


def test_overview_displays_radiologically_whatever_the_direction(tmp_path):
    """A tumour on the patient's left appears on the image right, for LPS and RAS-flipped storage alike."""
    ct, labels, _ = make_case()  # tumour at i=50 > centre: towards +x = patient left in LPS
    # The same anatomy stored in RAS index order.
    flipped = [sitk.Flip(image, [True, True, False]) for image in (ct, labels)]
    assert flipped[0].GetDirection()[0] == -1.0
    sides = []
    for name, (image, lab) in {"lps": (ct, labels), "ras": tuple(flipped)}.items():
        png = render_overview(tmp_path / f"{name}.png", {Phase.VENOUS: image}, lab, None, title=name)
        rgb = (imread(str(png))[..., :3] * 255).astype(int)
        red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
        sides.append(np.nonzero(red)[1].mean() / rgb.shape[1])
    assert sides[0] > 0.5 and sides[1] > 0.5
    assert abs(sides[0] - sides[1]) < 0.02


def test_overview_with_heatmap_and_truth(tmp_path):
    ct, labels, heat = make_case()
    images = {Phase.ARTERIAL: ct, Phase.VENOUS: ct, Phase.DELAYED: ct}
    plain = render_overview(tmp_path / "p.png", images, labels, None, title="x")
    full = render_overview(tmp_path / "h.png", images, labels, heat, title="x", truth=labels)
    plain_rgb, full_rgb = (imread(str(p))[..., :3] for p in (plain, full))
    assert full_rgb.shape[1] > plain_rgb.shape[1]  # room for the colour bar

    def coloured(rgb):  # heatmap colours: far from grey, unlike the CT
        return int((np.ptp(rgb, axis=-1) > 0.25).sum())

    assert coloured(full_rgb) > coloured(plain_rgb) + 2000
    empty = render_overview(tmp_path / "e.png", {Phase.VENOUS: ct}, None, None, title="nothing")
    assert _red_pixels(empty) == 0


def test_dicom_seg_is_omitted_with_a_report_entry_when_it_cannot_be_written(tmp_path):
    ct, labels, _ = make_case()
    other_grid = sitk.Image(ct)
    other_grid.SetOrigin(tuple(np.add(ct.GetOrigin(), [0.5, 0.0, 0.0])))
    files = write_dicom_series(other_grid, tmp_path / "dicom", SeriesHeader())
    paths = write(tmp_path / "a", source_dicom_files=files)
    assert paths.labels_dicom_seg is None and not (tmp_path / "a" / "labels.dcm").exists()
    report = Report.from_json(paths.report.read_text())
    assert any("labels.dcm was not written" in w and "not on the grid" in w for w in report.warnings)
    assert "labels.dcm" not in report.outputs

    same_grid_files = write_dicom_series(ct, tmp_path / "dicom2", SeriesHeader())
    empty = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(labels)
    paths = write(tmp_path / "b", labels=empty, source_dicom_files=same_grid_files)
    report = Report.from_json(paths.report.read_text())
    assert paths.labels_dicom_seg is None
    assert any("all background" in note for note in report.notes) and not report.warnings
    paths = write(tmp_path / "c", source_dicom_files=same_grid_files)
    assert (
        paths.labels_dicom_seg.is_file()
        and "labels.dcm" in Report.from_json(paths.report.read_text()).outputs
    )
