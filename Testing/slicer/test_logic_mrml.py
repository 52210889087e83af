"""The module's logic against slicer-core's real MRML scene, with a fake engine process (no models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

REPO_ROOT = Path(__file__).resolve().parents[2]
PANCREAS_COLOR = (249 / 255, 180 / 255, 111 / 255)


@pytest.fixture
def core(scene, fake_engine_prefix, tmp_path):
    from PancreasAILogicLib.logic import PancreasAICore

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return PancreasAICore(scene, engine_prefix=fake_engine_prefix, home=tmp_path / "home", engine_env=env)


def add_ct(scene, name: str, mean: int, *, origin=(10.0, -20.0, 30.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    """A small CT-like volume with an oblique-free but non-trivial geometry (LPS in, RAS in the scene)."""
    from PancreasAILogicLib.scene_io import update_volume_from_image

    rng = np.random.default_rng(mean)
    image = sitk.GetImageFromArray((mean + rng.normal(0, 5, (16, 30, 40))).astype(np.int16))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_volume_from_image(node, image)
    return node


def run(core, phases, mode: str = "ok", **kwargs):
    core.engine_env["FAKE_ENGINE_MODE"] = mode
    done: dict = {}
    core.start_segmentation(
        phases, on_done=lambda outcome, results: done.update(outcome=outcome, results=results), **kwargs
    )
    core.runner.wait(timeout_s=120)
    assert "outcome" in done, "on_done was not called"
    return done["outcome"], done["results"]


def scene_snapshot(scene) -> list[tuple[str, str]]:
    return [(n.GetID(), n.GetName()) for n in (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()))]


def test_results_become_a_segmentation_with_the_label_contract(scene, core) -> None:
    from PancreasAILib.export.labels import LABELS

    venous = add_ct(scene, "venous CT", 200, direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    outcome, results = run(core, {"venous": venous})
    assert outcome.ok, outcome.message
    node = results.segmentation
    assert node.GetName().startswith("PancreasAI ") and node.GetName().endswith(" segmentation")
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is venous
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == [
        "pancreas",
        "tumor",
    ]
    for label in LABELS:
        segment = segmentation.GetSegment(label.segment_id)
        assert segment.GetName() == label.name
        assert segment.GetColor() == pytest.approx(label.color)
        assert segment.GetLabelValue() == label.value
        terminology = segment.GetTerminology()
        assert f"SCT^{label.type.value}^{label.type.meaning}" in terminology
        assert f"SCT^{label.category.value}^" in terminology
    assert segmentation.GetSegment("pancreas").GetColor() == pytest.approx(PANCREAS_COLOR)
    assert "SCT^15776009^Pancreas~^^" in segmentation.GetSegment("tumor").GetTerminology()  # anatomic region
    assert results.pdac_likelihood == pytest.approx(0.83)

    # The voxels come back exactly: export on the reference grid equals the engine's labels.nii.gz.
    from PancreasAILogicLib.exporting import segmentation_to_labels
    from PancreasAILogicLib.scene_io import volume_to_image

    engine_labels = sitk.ReadImage(node.GetAttribute("PancreasAI.Prediction"))
    exported = segmentation_to_labels(node, venous).labels
    assert np.array_equal(sitk.GetArrayViewFromImage(exported), sitk.GetArrayViewFromImage(engine_labels))
    reference = volume_to_image(venous)
    assert exported.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert exported.GetDirection() == pytest.approx(reference.GetDirection())


def test_heatmap_volume_colours_and_foreground(scene, core) -> None:
    venous = add_ct(scene, "venous CT", 200)
    outcome, results = run(core, {"venous": venous})
    assert outcome.ok, outcome.message
    heatmap = results.heatmap
    assert heatmap is not None and heatmap.GetName().endswith(" heatmap")
    assert heatmap.GetImageData().GetScalarTypeAsString() == "float"
    display = heatmap.GetDisplayNode()
    color = display.GetColorNode()
    assert color.GetName() == "PancreasAI heatmap" and color.GetNumberOfColors() == 256
    assert display.GetApplyThreshold()
    peak = results.report["heatmap"]["peak_value"]
    assert display.GetLowerThreshold() == pytest.approx(0.2 * peak)
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    assert composite.GetBackgroundVolumeID() is None  # the user's background is left alone

    core.set_heatmap_display(heatmap, opacity=0.8, threshold=0.1 * peak, visible=True)
    assert display.GetLowerThreshold() == pytest.approx(0.1 * peak)
    assert all(
        c.GetForegroundOpacity() == pytest.approx(0.8)
        for c in scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    )
    core.set_heatmap_display(heatmap, visible=False)
    assert all(c.GetForegroundVolumeID() is None for c in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"))

    # A second run reuses the one colour table instead of adding another.
    run(core, {"venous": venous})
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == 1


def test_no_heatmap_node_when_it_was_not_computed(scene, core) -> None:
    venous = add_ct(scene, "venous CT", 200)
    outcome, results = run(core, {"venous": venous}, heatmap=False)
    assert outcome.ok and results.heatmap is None


def test_lesions_become_markups_and_a_table_in_ras(scene, core) -> None:
    venous = add_ct(scene, "venous CT", 200)
    outcome, results = run(core, {"venous": venous})
    assert outcome.ok
    markups, table = results.lesion_markups, results.lesion_table
    assert markups.GetNumberOfControlPoints() == 1 and markups.GetNthControlPointLabel(0) == "L1"
    position = [0.0, 0.0, 0.0]
    markups.GetNthControlPointPosition(0, position)
    lesion = results.report["lesions"][0]
    lps = lesion["centroid_mm"]
    assert position == pytest.approx([-lps[0], -lps[1], lps[2]])  # LPS -> RAS
    # The RAS point lies in the tumour: map it to a voxel of the reference and look.
    labels = sitk.ReadImage(results.segmentation.GetAttribute("PancreasAI.Prediction"))
    index = labels.TransformPhysicalPointToIndex([-position[0], -position[1], position[2]])
    assert labels[index] == 2
    assert table.GetNumberOfRows() == 1
    assert table.GetColumnName(1) == "Volume (mL)"
    assert float(table.GetCellText(0, 1)) == pytest.approx(lesion["volume_ml"])
    # how the lesion compares with the rest of the gland, as the engine measured it
    assert table.GetColumnName(4) == "Vs gland (HU)" and table.GetCellText(0, 4) == "-22 venous"
    assert "HU vs gland -22 venous" in markups.GetNthControlPointDescription(0)

    core.centre_on(results.lesions[0].centroid_ras)
    for slice_node in scene.GetNodesByClass("vtkMRMLSliceNode"):
        xy_to_ras = slice_node.GetXYToRAS()
        centre = [xy_to_ras.GetElement(r, 3) for r in range(3)]
        dims = slice_node.GetDimensions()
        offset = [
            xy_to_ras.GetElement(r, 0) * dims[0] / 2 + xy_to_ras.GetElement(r, 1) * dims[1] / 2
            for r in range(3)
        ]
        assert [c + o for c, o in zip(centre, offset, strict=True)] == pytest.approx(list(position), abs=1e-3)


def test_runs_add_new_nodes_and_never_overwrite(scene, core) -> None:
    venous = add_ct(scene, "venous CT", 200)
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    before = scene_snapshot(scene)
    _, first = run(core, {"venous": venous})
    _, second = run(core, {"venous": venous})
    assert first.segmentation.GetID() != second.segmentation.GetID()
    assert first.segmentation.GetName() != second.segmentation.GetName()
    after = scene_snapshot(scene)
    assert after[: len(before)] == before  # every node the user had is still there, unchanged
    assert existing.GetSegmentation().GetNumberOfSegments() == 0
    assert venous.GetName() == "venous CT" and venous.GetStorageNode() is None


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("error", "The venous image is empty"),
        ("crash", "stopped unexpectedly"),
        ("wronggrid", "could not be imported"),
    ],
)
def test_failed_runs_leave_the_scene_unchanged(scene, core, mode: str, expected: str) -> None:
    venous = add_ct(scene, "venous CT", 200)
    before = scene_snapshot(scene)
    outcome, results = run(core, {"venous": venous}, mode=mode)
    assert not outcome.ok and results is None
    assert expected in outcome.message and "unchanged" in outcome.message
    assert scene_snapshot(scene) == before
    assert not list((core.home / "runs").glob("*"))  # nothing of a failed run is kept


def test_cancelled_run_leaves_the_scene_unchanged(scene, core) -> None:
    venous = add_ct(scene, "venous CT", 200)
    before = scene_snapshot(scene)
    core.engine_env["FAKE_ENGINE_MODE"] = "slow"
    done: dict = {}
    core.start_segmentation(
        {"venous": venous},
        on_progress=lambda event: core.cancel(),
        on_done=lambda outcome, results: done.update(outcome=outcome, results=results),
    )
    assert core.running
    outcome = core.runner.wait(timeout_s=60)
    assert outcome is not None and outcome.state.value == "cancelled"
    assert done["results"] is None
    assert scene_snapshot(scene) == before


def test_phase_identification_fills_the_phases(scene, core) -> None:
    nodes = {
        "arterial": add_ct(scene, "series A", 100),
        "venous": add_ct(scene, "series B", 200),
        "delayed": add_ct(scene, "series C", 300),
    }
    found: dict = {}
    core.engine_env["FAKE_ENGINE_MODE"] = "ok"
    core.identify_phases(
        list(nodes.values())[::-1], lambda phases, message: found.update(phases=phases, msg=message)
    )
    core._identify_runner.wait(timeout_s=60)
    assert found["phases"] == nodes
    assert "arterial 0.90" in found["msg"]


def test_three_phases_use_venous_as_reference(scene, core) -> None:
    nodes = {
        "arterial": add_ct(scene, "A", 100, origin=(0.0, 0.0, 0.0)),
        "venous": add_ct(scene, "V", 200),
        "delayed": add_ct(scene, "D", 300, origin=(5.0, 5.0, 5.0)),
    }
    outcome, results = run(core, nodes)
    assert outcome.ok, outcome.message
    role = results.segmentation.GetReferenceImageGeometryReferenceRole()
    assert results.segmentation.GetNodeReference(role) is nodes["venous"]


def corrected_export(scene, core, tmp_path: Path, suffix: str):
    from PancreasAILogicLib.scene_io import volume_to_image

    venous = add_ct(scene, "venous CT", 200, direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    _, results = run(core, {"venous": venous})
    node = results.segmentation
    segmentation = node.GetSegmentation()
    # What a radiologist might do: rename, recolour, reorder, add a segment of their own.
    segmentation.GetSegment("tumor").SetName("pancreatic tumour")
    segmentation.GetSegment("pancreas").SetColor(0.1, 0.9, 0.1)
    segmentation.SetSegmentIndex("tumor", 0)
    segmentation.AddEmptySegment("note", "Cyst", [0.0, 0.0, 1.0])
    path = tmp_path / f"corrected{suffix}"
    result = core.export(node, venous, path, phase_nodes={"venous": venous})
    return result, volume_to_image(venous), sitk.ReadImage(node.GetAttribute("PancreasAI.Prediction"))


@pytest.mark.parametrize("suffix", [".nii.gz", ".seg.nrrd"])
def test_export_keeps_label_values_on_the_reference_geometry(scene, core, tmp_path, suffix) -> None:
    result, reference, prediction = corrected_export(scene, core, tmp_path, suffix)
    assert result.ignored_segments == ["Cyst"]
    if suffix == ".seg.nrrd":
        from PancreasAILib.export.seg_nrrd import read_seg_nrrd_labels

        labels = read_seg_nrrd_labels(result.path, reference)
    else:
        labels = sitk.ReadImage(str(result.path))
        assert labels.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-4)
        assert labels.GetDirection() == pytest.approx(reference.GetDirection(), abs=1e-6)
        assert labels.GetSize() == reference.GetSize()
    assert np.array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(prediction))
    assert set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) == {0, 1, 2}


def test_export_stores_a_correction_record_the_engine_reads(scene, core, tmp_path) -> None:
    from PancreasAILib.corrections import load_correction_records

    result, reference, prediction = corrected_export(scene, core, tmp_path, ".nii.gz")
    records = load_correction_records(core.home / "corrections")
    assert [r.record_dir for r in records] == [result.record_dir]
    record = records[0]
    assert set(record.phases) == {"venous"}
    assert record.model_versions["stage1_pancreas"]["sha256"] == ["a" * 64, "b" * 64]  # every member kept
    venous = sitk.ReadImage(str(record.phases["venous"]))
    assert np.allclose(sitk.GetArrayViewFromImage(venous), sitk.GetArrayViewFromImage(reference))
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(record.prediction))), sitk.GetArrayViewFromImage(prediction)
    )


def test_dicom_seg_export_needs_a_dicom_reference(scene, core, tmp_path) -> None:
    venous = add_ct(scene, "venous CT", 200)
    _, results = run(core, {"venous": venous})
    with pytest.raises(ValueError, match="DICOM"):
        core.export(results.segmentation, venous, tmp_path / "seg.dcm", phase_nodes={"venous": venous})


def test_reading_a_volume_does_not_touch_it(scene) -> None:
    from PancreasAILogicLib.scene_io import same_geometry, volume_to_image

    node = add_ct(scene, "CT", 200, direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    modified = node.GetMTime()
    image = volume_to_image(node)
    assert node.GetMTime() == modified and node.GetStorageNode() is None
    assert same_geometry(node, image)
    assert sys.getrefcount(node) > 0


def test_the_lesion_text_says_how_it_compares_with_the_gland() -> None:
    from PancreasAILogicLib.results import versus_gland_text

    brighter = {"attenuation_hu": {"arterial": 5.2, "venous": 3.0}, "hypoattenuating": False}
    assert versus_gland_text(brighter) == "+5 arterial, +3 venous (not darker: ranked lower)"
    assert versus_gland_text({"attenuation_hu": {"venous": -18.4}, "hypoattenuating": True}) == "-18 venous"
    assert versus_gland_text({"confidence": 0.9}) == ""  # a report from before schema 1.2
    # graded weighting (schema 1.4): a lesion barely darker than the gland is weighed down too
    barely = {
        "attenuation_hu": {"venous": -2.0},
        "hypoattenuating": True,
        "confidence": 0.6,
        "network_confidence": 0.8,
    }
    assert versus_gland_text(barely) == "-2 venous (barely darker: ranked lower)"
    not_weighed = {
        "attenuation_hu": {"venous": 4.0},
        "hypoattenuating": False,
        "confidence": 0.8,
        "network_confidence": 0.8,
    }
    assert versus_gland_text(not_weighed) == "+4 venous"  # weight 1: nothing was ranked lower


def test_the_notes_give_the_warnings_and_the_vein_left_out() -> None:
    from PancreasAILogicLib.results import report_notes

    report = {
        "warnings": [
            "You set a.nii.gz as arterial, but it looks delayed (confidence 0.91); your choice was kept."
        ],
        "vessel_exclusion": {"margin_hu": 40.0, "excluded_ml": 3.25, "gland_venous_median_hu": 86.0},
    }
    notes = report_notes(report)
    assert notes[0].startswith("You set a.nii.gz as arterial")
    assert (
        notes[1]
        == "Left out of the pancreas: 3.2 mL of enhanced vein (more than 40 HU above the gland, venous phase)."
    )
    nothing_taken = {"vessel_exclusion": {"margin_hu": 40.0, "excluded_ml": 0.0}, "warnings": []}
    assert report_notes(nothing_taken) == []
    assert report_notes({"schema_version": "1.2"}) == []  # older reports have neither
