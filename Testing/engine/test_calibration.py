"""The PDAC likelihood calibration: the fit, its storage beside the stage-2 weights, and its use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import make_tiny_models

from PancreasAILib.cascade.calibration import LikelihoodCalibration, uncalibrated_likelihood
from PancreasAILib.cascade.lesions import LesionCandidate, pdac_likelihood
from PancreasAILib.cascade.runner import Cascade
from PancreasAILib.cli.main import main
from PancreasAILib.errors import ExitCode
from PancreasAILib.models.registry import get_entry


def _scores(rng, n=40):
    """Maxima-like scores: everyone's head and lesion above 0.5, tumour cases higher (the shipped model's shape)."""
    tumour = rng.uniform(size=n) < 0.5
    head = np.clip(rng.normal(np.where(tumour, 0.9, 0.7), 0.08), 0.5, 0.999)
    lesion = np.clip(rng.normal(np.where(tumour, 0.85, 0.55), 0.12), 0.0, 0.999)
    return head, lesion, tumour


def test_fit_turns_maxima_into_a_threshold_that_separates():
    head, lesion, tumour = _scores(np.random.default_rng(0))
    raw = np.array([uncalibrated_likelihood(h, s) for h, s in zip(head, lesion, strict=True)])
    assert np.mean(raw[~tumour] >= 0.5) > 0.9  # uncalibrated: nearly every healthy case is "positive"
    calibration = LikelihoodCalibration.fit(head, lesion, tumour)
    calibrated = np.array([calibration(h, s) for h, s in zip(head, lesion, strict=True)])
    specificity = np.mean(calibrated[~tumour] < 0.5)
    sensitivity = np.mean(calibrated[tumour] >= 0.5)
    assert specificity > 0.75 and sensitivity > 0.75
    assert calibration.w_head >= 0 and calibration.w_lesion >= 0
    assert calibration(0.9, 0.9) > calibration(0.9, 0.5) > calibration(0.6, 0.5)  # monotone
    assert LikelihoodCalibration.from_dict(calibration.to_dict()) == calibration


def test_fit_refuses_a_single_class():
    with pytest.raises(ValueError, match="with and without"):
        LikelihoodCalibration.fit([0.7] * 6, [0.6] * 6, [True] * 6)


def test_likelihood_uses_the_calibration_when_given():
    lesion = LesionCandidate(1, 0.6, 1.0, 12.0, (0.0, 0.0, 0.0), 100)
    assert pdac_likelihood(0.8, [lesion]) == pytest.approx(0.7)
    calibration = LikelihoodCalibration(1.0, 1.0, -1.0)
    expected = 1 / (1 + np.exp(-(np.log(0.8 / 0.2) + np.log(0.6 / 0.4) - 1.0)))
    assert pdac_likelihood(0.8, [lesion], calibration) == pytest.approx(expected, abs=1e-4)


def _fake_predictions(tmp_path, version: str):
    """Segment-batch style reports plus nnU-Net labels for 24 cases drawn like `_scores`."""
    head, lesion, tumour = _scores(np.random.default_rng(1), n=24)
    pred, labels = tmp_path / "pred", tmp_path / "gt" / "labelsTr"
    labels.mkdir(parents=True)
    for k in range(len(head)):
        case = pred / f"CASE_{k:03d}"
        case.mkdir(parents=True)
        report = {
            "segmentation_status": "done",
            "pdac_classifier_probability": float(head[k]),
            "lesions": [{"confidence": float(lesion[k])}],
            "models": [{"name": "stage2_tumour", "version": version, "sha256": "x"}],
        }
        (case / "report.json").write_text(json.dumps(report))
        label = np.zeros((4, 8, 8), np.uint8)
        label[1:3, 2:6, 2:6] = 1
        if tumour[k]:
            label[2, 3:5, 3:5] = 2
        sitk.WriteImage(sitk.GetImageFromArray(label), str(labels / f"CASE_{k:03d}.nii.gz"))
    return pred, tmp_path / "gt"


def test_calibrate_command_stores_the_fit_and_the_cascade_uses_it(tmp_path, monkeypatch, capsys):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    pred, gt = _fake_predictions(tmp_path, version="test")
    assert main(["calibrate", "--pred", str(pred), "--gt", str(gt), "--register"]) == 0
    out = capsys.readouterr().out
    assert "24 cases" in out and "calibrated" in out
    stored = get_entry("stage2_tumour").calibration
    assert stored["fitted_on"] == 24 and stored["w_lesion"] > 0
    assert Cascade.load("cpu").calibration == LikelihoodCalibration.from_dict(stored)


def test_calibrate_refuses_predictions_of_other_weights(tmp_path, monkeypatch, capsys):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    pred, gt = _fake_predictions(tmp_path, version="0.0.9")
    assert main(["calibrate", "--pred", str(pred), "--gt", str(gt), "--register"]) == ExitCode.BAD_INPUT
    assert "Segment the cases again" in capsys.readouterr().err
    assert get_entry("stage2_tumour").calibration == {}
