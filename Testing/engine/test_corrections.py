"""Correction records: write -> load round trip, atomic folders, hashed identifiers, label checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasAILib.corrections import (
    CorrectionRecord,
    hash_identifier,
    load_correction_records,
    write_correction_record,
)


def grid_image(array: np.ndarray, origin=(10.0, -5.0, 20.0), spacing=(0.8, 0.8, 2.5)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    return image


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    phases = {
        p: grid_image(rng.normal(100 * (n + 1), 10, (12, 20, 24)).astype(np.float32))
        for n, p in enumerate(("arterial", "venous", "delayed"))
    }
    prediction = np.zeros((12, 20, 24), np.uint8)
    prediction[4:8, 5:15, 6:18] = 1
    prediction[5:7, 8:11, 9:12] = 2
    corrected = prediction.copy()
    corrected[5:7, 8:12, 9:14] = 2  # the radiologist grew the tumour
    return phases, grid_image(prediction), grid_image(corrected)


def test_round_trip_gives_back_equal_images(tmp_path, case) -> None:
    phases, prediction, corrected = case
    ids = {
        "venous.patient_key": "Doe^Jane",
        "venous.instances": "1.2.840.113619.2.55.3.1 1.2.840.113619.2.55.3.2",
    }
    folder = write_correction_record(
        tmp_path,
        phases=phases,
        prediction=prediction,
        corrected=corrected,
        model_versions={"stage2": {"version": "0.1", "sha256": "ab"}},
        input_ids=ids,
    )
    records = load_correction_records(tmp_path)
    assert len(records) == 1 and isinstance(records[0], CorrectionRecord)
    record = records[0]
    assert record.record_dir == folder and set(record.phases) == {"arterial", "venous", "delayed"}
    for phase, image in phases.items():
        loaded = sitk.ReadImage(str(record.phases[phase]))
        assert np.allclose(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))
        assert loaded.GetOrigin() == pytest.approx(corrected.GetOrigin())
        assert loaded.GetDirection() == pytest.approx(corrected.GetDirection())
    for path, image in ((record.corrected_label, corrected), (record.prediction, prediction)):
        loaded = sitk.ReadImage(str(path))
        assert loaded.GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))
    assert record.model_versions == {"stage2": {"version": "0.1", "sha256": "ab"}}
    text = (folder / "record.json").read_text()
    assert "Doe" not in text and "1.2.840" not in text  # identifiers only as hashes
    assert record.input_ids["venous.patient_key"] == hash_identifier("Doe^Jane")
    data = json.loads(text)
    assert data["changed_voxels"]["2"] > 0 and data["labels"] == {"1": "Pancreas", "2": "Tumor"}


def test_phases_on_another_grid_are_resampled_onto_the_label_grid(tmp_path, case) -> None:
    phases, prediction, corrected = case
    coarse = sitk.Resample(
        phases["arterial"],
        [12, 10, 12],
        sitk.Transform(),
        sitk.sitkLinear,
        phases["arterial"].GetOrigin(),
        [1.6, 1.6, 2.5],
        phases["arterial"].GetDirection(),
    )
    write_correction_record(
        tmp_path,
        phases={"arterial": coarse},
        prediction=prediction,
        corrected=corrected,
        model_versions={},
        input_ids={},
    )
    record = load_correction_records(tmp_path)[0]
    loaded = sitk.ReadImage(str(record.phases["arterial"]))
    assert loaded.GetSize() == corrected.GetSize() and loaded.GetSpacing() == pytest.approx(
        corrected.GetSpacing()
    )


def test_bad_labels_are_refused_and_leave_nothing(tmp_path, case) -> None:
    phases, prediction, _ = case
    bad = grid_image(np.full((12, 20, 24), 3, np.uint8))
    with pytest.raises(ValueError, match="outside the contract"):
        write_correction_record(
            tmp_path, phases=phases, prediction=prediction, corrected=bad, model_versions={}, input_ids={}
        )
    with pytest.raises(ValueError, match="phase"):
        write_correction_record(
            tmp_path,
            phases={"portal": phases["venous"]},
            prediction=prediction,
            corrected=prediction,
            model_versions={},
            input_ids={},
        )
    assert not list(tmp_path.iterdir()) or all(not p.name.startswith(".staging") for p in tmp_path.iterdir())
    assert load_correction_records(tmp_path) == []


def test_incomplete_and_hidden_folders_are_skipped(tmp_path, case) -> None:
    phases, prediction, corrected = case
    good = write_correction_record(
        tmp_path,
        phases={"venous": phases["venous"]},
        prediction=prediction,
        corrected=corrected,
        model_versions={},
        input_ids={},
    )
    broken = write_correction_record(
        tmp_path,
        phases={"venous": phases["venous"]},
        prediction=prediction,
        corrected=corrected,
        model_versions={},
        input_ids={},
    )
    (broken / "prediction.nii.gz").unlink()
    (tmp_path / ".staging-half-written").mkdir()
    assert [r.record_dir for r in load_correction_records(tmp_path)] == [good]
    assert load_correction_records(tmp_path / "absent") == []
