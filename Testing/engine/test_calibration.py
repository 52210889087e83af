"""The PDAC likelihood calibration: the fit, its storage beside the stage-2 weights, and its use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import make_tiny_models

from PancreasAILib.cascade.calibration import (
    ALL_PHASES,
    LikelihoodCalibration,
    PhaseCalibrations,
    uncalibrated_likelihood,
)
from PancreasAILib.cascade.lesions import LesionCandidate, pdac_likelihood
from PancreasAILib.cascade.runner import Cascade
from PancreasAILib.cascade.settings import CascadeSettings
from PancreasAILib.cli.main import main
from PancreasAILib.errors import ExitCode
from PancreasAILib.models.registry import get_entry


def _scores(rng, n=40, shift=0.0):
    """Maxima-like scores: everyone's head and lesion above 0.5, tumour cases higher (the shipped model's shape).

    `shift` raises the healthy cases' lesion scores, as missing phases do (spurious candidates grow)."""
    tumour = rng.uniform(size=n) < 0.5
    head = np.clip(rng.normal(np.where(tumour, 0.9, 0.7), 0.08), 0.5, 0.999)
    lesion = np.clip(rng.normal(np.where(tumour, 0.85, 0.55 + shift), 0.12), 0.0, 0.999)
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


def _fake_predictions(
    tmp_path,
    sha256: str | None = None,
    phases=("arterial", "venous", "delayed"),
    shift=0.0,
    seed=1,
    weight: float | None = None,
    ramp: float | None = None,
):
    """Segment-batch style reports plus nnU-Net labels for 24 cases drawn like `_scores`.

    The same cases (same truth) for every `phases`, as `segment --batch --phases` makes them; made
    with the registered stage-2 weights unless `sha256` says otherwise."""
    sha256 = sha256 or get_entry("stage2_tumour").sha256
    head, lesion, tumour = _scores(np.random.default_rng(seed), n=24, shift=shift)
    pred, labels = tmp_path / f"pred_{'+'.join(phases)}", tmp_path / "gt" / "labelsTr"
    labels.mkdir(parents=True, exist_ok=True)
    for k in range(len(head)):
        case = pred / f"CASE_{k:03d}"
        case.mkdir(parents=True)
        report = {
            "segmentation_status": "done",
            "phases": {p: {"confidence": 1.0} for p in phases},
            "pdac_classifier_probability": float(head[k]),
            "lesions": [{"confidence": float(lesion[k])}],
            "models": [{"name": "stage2_tumour", "version": "as segmented", "sha256": sha256}],
        }
        if weight is not None:  # reports from schema 1.2 on say how lesions were weighed
            report["non_hypo_lesion_weight"] = weight
        if ramp is not None:  # and from 1.4 on over how many HU it was graded
            report["attenuation_ramp_hu"] = ramp
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
    pred, gt = _fake_predictions(tmp_path)
    assert main(["calibrate", "--pred", str(pred), "--gt", str(gt), "--register"]) == 0
    out = capsys.readouterr().out
    assert "24 cases" in out and "calibrated" in out
    stored = get_entry("stage2_tumour").calibration
    fit = stored["by_phases"][ALL_PHASES]
    assert fit["fitted_on"] == 24 and fit["w_lesion"] > 0
    assert Cascade.load("cpu").calibration == PhaseCalibrations.from_dict(stored)


def test_each_subset_of_phases_gets_its_own_threshold(tmp_path, monkeypatch, capsys):
    """Delayed-only scores run higher on healthy cases: the three-phase fit calls them positive, their own does not."""
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    three, gt = _fake_predictions(tmp_path)
    delayed, _ = _fake_predictions(tmp_path, phases=("delayed",), shift=0.3, seed=1)
    assert main(["calibrate", "--pred", str(three), str(delayed), "--gt", str(gt), "--register"]) == 0
    assert "delayed: 24 cases" in capsys.readouterr().out
    calibrations = Cascade.load("cpu").calibration
    assert set(calibrations.by_phases) == {ALL_PHASES, "delayed"}

    head, lesion, tumour = _scores(np.random.default_rng(5), n=200, shift=0.3)  # fresh delayed-only cases
    own, own_key = calibrations.select(["delayed"])
    three_phase, _ = calibrations.select(["arterial", "venous", "delayed"])
    assert own_key == "delayed"
    spec_own = np.mean([own(h, s) < 0.5 for h, s in zip(head[~tumour], lesion[~tumour], strict=True)])
    spec_three = np.mean(
        [three_phase(h, s) < 0.5 for h, s in zip(head[~tumour], lesion[~tumour], strict=True)]
    )
    sens_own = np.mean([own(h, s) >= 0.5 for h, s in zip(head[tumour], lesion[tumour], strict=True)])
    assert spec_own > spec_three + 0.2 and spec_own > 0.7 and sens_own > 0.7

    # A later fit of one subset keeps the other's, and a subset never fitted falls back to three phases.
    assert main(["calibrate", "--pred", str(three), "--gt", str(gt), "--register"]) == 0
    assert "kept the earlier fits of delayed" in capsys.readouterr().out
    assert set(Cascade.load("cpu").calibration.by_phases) == {ALL_PHASES, "delayed"}
    assert calibrations.select(["venous"])[1] == ALL_PHASES


def test_the_single_fit_of_earlier_releases_reads_as_the_three_phase_fit():
    legacy = {"w_head": 0.105, "w_lesion": 2.47, "bias": -3.98, "fitted_on": 20}
    calibrations = PhaseCalibrations.from_dict(legacy)
    assert calibrations.by_phases == {ALL_PHASES: LikelihoodCalibration.from_dict(legacy)}
    assert PhaseCalibrations.from_dict(calibrations.to_dict()) == calibrations
    assert PhaseCalibrations.from_dict({}) is None
    assert PhaseCalibrations().select(["venous"]) == (None, None)


def test_calibrate_refuses_predictions_of_other_weights(tmp_path, monkeypatch, capsys):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    pred, gt = _fake_predictions(tmp_path, sha256="0" * 64)
    assert main(["calibrate", "--pred", str(pred), "--gt", str(gt), "--register"]) == ExitCode.BAD_INPUT
    assert "Segment the cases again" in capsys.readouterr().err
    assert get_entry("stage2_tumour").calibration == {}


def test_calibrate_knows_weights_by_their_sha256_not_their_version_string(tmp_path, monkeypatch, capsys):
    """A candidate segmented from a copy of the model folder keeps its predictions once registered
    under its release version: the version string in the reports differs, the weights do not."""
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    pred, gt = _fake_predictions(tmp_path)  # reports say "as segmented", the manifest another version
    assert get_entry("stage2_tumour").version != "as segmented"
    assert main(["calibrate", "--pred", str(pred), "--gt", str(gt), "--register"]) == 0
    assert get_entry("stage2_tumour").calibration["by_phases"][ALL_PHASES]["fitted_on"] == 24


def test_the_lesion_weighting_is_registered_with_the_fit_and_drops_fits_of_another(
    tmp_path, monkeypatch, capsys
):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    delayed, gt = _fake_predictions(tmp_path, phases=("delayed",))  # unweighed (a report before 1.2)
    assert main(["calibrate", "--pred", str(delayed), "--gt", str(gt), "--register"]) == 0
    assert Cascade.load("cpu").settings.non_hypo_lesion_weight == 1.0
    capsys.readouterr()

    three, _ = _fake_predictions(tmp_path, weight=0.5)
    assert main(["calibrate", "--pred", str(three), "--gt", str(gt), "--register"]) == 0
    assert "dropped the earlier fits of delayed" in capsys.readouterr().out
    cascade = Cascade.load("cpu")
    assert cascade.settings.non_hypo_lesion_weight == 0.5 and set(cascade.calibration.by_phases) == {
        ALL_PHASES
    }
    assert get_entry("stage2_tumour").input_spec["non_hypo_lesion_weight"] == 0.5
    assert (
        Cascade.load(
            "cpu", settings=CascadeSettings(non_hypo_lesion_weight=1.0)
        ).settings.non_hypo_lesion_weight
        == 1.0
    )  # a run may override

    venous, _ = _fake_predictions(tmp_path, phases=("venous",), weight=1.0)
    assert main(["calibrate", "--pred", str(three), str(venous), "--gt", str(gt)]) == ExitCode.BAD_INPUT
    assert "different lesion weightings" in capsys.readouterr().err


def test_the_graded_weighting_is_registered_with_the_fit(tmp_path, monkeypatch, capsys):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    hard, gt = _fake_predictions(tmp_path, weight=0.5)
    assert main(["calibrate", "--pred", str(hard), "--gt", str(gt), "--register"]) == 0
    assert Cascade.load("cpu").settings.attenuation_ramp_hu == 0.0  # a hard cut
    capsys.readouterr()
    graded, _ = _fake_predictions(tmp_path, phases=("venous",), weight=0.5, ramp=5.0)
    assert main(["calibrate", "--pred", str(graded), "--gt", str(gt), "--register"]) == 0
    out = capsys.readouterr().out
    assert (
        "graded over ±5 HU (was 0.5 over ±0 HU: dropped the earlier fits of arterial+venous+delayed)" in out
    )
    cascade = Cascade.load("cpu")
    assert (cascade.settings.non_hypo_lesion_weight, cascade.settings.attenuation_ramp_hu) == (0.5, 5.0)
    assert set(cascade.calibration.by_phases) == {"venous"}
    assert main(["calibrate", "--pred", str(hard), str(graded), "--gt", str(gt)]) == ExitCode.BAD_INPUT
    assert "0.5 over ±0 HU, 0.5 over ±5 HU" in capsys.readouterr().err
