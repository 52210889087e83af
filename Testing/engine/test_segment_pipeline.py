"""`pancreasai segment` end to end with tiny registered models: the output contract, exit statuses, batches.

These check the plumbing (registry -> cascade -> physical-space outputs -> report), not accuracy;
`test_shipped_models.py` checks what the trained weights find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cascade_fixtures import make_small_case
from model_fixtures import make_tiny_models

from PancreasAILib.cascade.runner import Cascade
from PancreasAILib.cli.main import main
from PancreasAILib.errors import ExitCode
from PancreasAILib.models.registry import add_ensemble_member
from PancreasAILib.phases import Phase


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    return make_small_case(tmp_path_factory.mktemp("case"), seed=5)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def tiny_models(tiny_root, monkeypatch):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tiny_root))
    return tiny_root


def _segment(case, out, *extra):
    return main(
        [
            "segment",
            "--arterial",
            str(case.phases[Phase.ARTERIAL]),
            "--venous",
            str(case.phases[Phase.VENOUS]),
            "--delayed",
            str(case.phases[Phase.DELAYED]),
            "--out",
            str(out),
            "--no-heatmap",
            "--device",
            "cpu",
            "--progress",
            "none",
            *extra,
        ]
    )


def test_segment_writes_the_output_contract_on_the_reference_grid(small_case, tiny_models, tmp_path):
    out = tmp_path / "out"
    assert _segment(small_case, out) == 0
    venous = sitk.ReadImage(str(small_case.phases[Phase.VENOUS]))
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert labels.GetSize() == venous.GetSize()
    assert np.allclose(labels.GetOrigin(), venous.GetOrigin()) and np.allclose(
        labels.GetSpacing(), venous.GetSpacing()
    )
    report = json.loads((out / "report.json").read_text())
    assert report["segmentation_status"] == "done"
    assert {m["name"] for m in report["models"]} == {"stage1_pancreas", "stage2_tumour"}
    assert all(len(m["sha256"]) == 64 for m in report["models"])
    assert set(report["timings_s"]) >= {"align", "stage1", "stage2", "lesions"}
    assert 0.0 <= report["pdac_likelihood"] <= 1.0
    assert 0.0 <= report["pdac_classifier_probability"] <= 1.0
    # no input file names in the report (they may carry a patient's name), only salted keys
    text = (out / "report.json").read_text()
    for path in small_case.phases.values():
        assert Path(path).name not in text and Path(path).name.split(".")[0] not in text
    assert all(len(entry["file_key"]) == 12 for entry in report["inputs"].values())
    detection = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "detection_map.nii.gz")))
    # the detection map holds each reported lesion's confidence, and nothing else
    assert {round(float(v), 4) for v in np.unique(detection[detection > 0])} == {
        lesion["confidence"] for lesion in report["lesions"]
    }
    for lesion in report["lesions"]:
        index = labels.TransformPhysicalPointToIndex(lesion["centroid_mm"])
        assert all(0 <= i < n for i, n in zip(index, labels.GetSize(), strict=True))
        # each lesion says how it compares with the rest of the gland in every phase given
        assert set(lesion["attenuation_hu"]) == {"arterial", "venous", "delayed"}
        darker = [lesion["attenuation_hu"][p] < 0 for p in ("arterial", "venous")]  # delayed: no evidence
        assert lesion["hypoattenuating"] == any(darker)
        assert lesion["confidence"] <= lesion["network_confidence"]


def test_a_run_with_another_lesion_weighting_records_it_and_says_the_likelihood_is_a_ranking(
    small_case, tmp_path, monkeypatch
):
    from PancreasAILib.cascade.calibration import ALL_PHASES, LikelihoodCalibration, PhaseCalibrations
    from PancreasAILib.models.registry import set_calibration

    monkeypatch.setenv("PANCREASAI_MODELS", str(make_tiny_models(tmp_path / "models")))
    fits = PhaseCalibrations({ALL_PHASES: LikelihoodCalibration(1.0, 1.0, 0.0, 20)})
    set_calibration("stage2_tumour", fits.to_dict(), input_spec={"non_hypo_lesion_weight": 0.5})
    assert _segment(small_case, tmp_path / "w", "--non-hypo-weight", "0.25") == 0
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["non_hypo_lesion_weight"] == 0.25
    for lesion in report["lesions"]:
        kept = 0.25 if lesion["hypoattenuating"] is False else 1.0
        assert lesion["confidence"] == pytest.approx(kept * lesion["network_confidence"], abs=1e-4)
    assert any(
        "weighed by 0.5, this run used 0.25: read the likelihood as a ranking" in note
        for note in report["notes"]
    )


def test_a_graded_weighting_is_applied_and_recorded_with_the_growing_threshold(
    small_case, tmp_path, monkeypatch
):
    from PancreasAILib.cascade.attenuation import confidence_factor
    from PancreasAILib.cascade.calibration import ALL_PHASES, LikelihoodCalibration, PhaseCalibrations
    from PancreasAILib.models.registry import read_manifest, set_calibration, write_manifest

    root = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    entries = read_manifest(root)
    entries["stage1_pancreas"].input_spec["grow_threshold"] = 0.2
    write_manifest(entries, root)
    fits = PhaseCalibrations({ALL_PHASES: LikelihoodCalibration(1.0, 1.0, 0.0, 20)})
    graded = {"non_hypo_lesion_weight": 0.5, "attenuation_ramp_hu": 5.0}
    set_calibration("stage2_tumour", fits.to_dict(), input_spec=graded)
    assert _segment(small_case, tmp_path / "g", "--attenuation-ramp", "20") == 0
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert (report["non_hypo_lesion_weight"], report["attenuation_ramp_hu"]) == (0.5, 20.0)
    assert report["stage1_grow_threshold"] == 0.2
    assert report["lesions"], "the small case has a tumour"
    for lesion in report["lesions"]:
        share = confidence_factor(lesion["attenuation_hu"], 0.5, 20.0)
        assert lesion["confidence"] == pytest.approx(share * lesion["network_confidence"], abs=1e-4)
    assert any(
        "weighed by 0.5 graded over ±5 HU, this run used 0.5 graded over ±20 HU" in n for n in report["notes"]
    )


def test_a_negative_attenuation_grade_is_refused(small_case, tiny_models, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _segment(small_case, tmp_path / "w", "--attenuation-ramp", "-2")
    assert exit_info.value.code == 2 and "not a number of HU >= 0" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_lesion_weight_outside_zero_to_one_is_refused(small_case, tiny_models, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _segment(small_case, tmp_path / "w", "--non-hypo-weight", "1.5")
    assert exit_info.value.code == 2 and "not a share in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_the_bright_vessel_step_only_removes_gland_is_recorded_and_can_be_switched_off(
    small_case, tiny_models, tmp_path
):
    cache = ["--alignment-cache", str(tmp_path / "cache")]  # both runs on the same registrations
    assert _segment(small_case, tmp_path / "keep", "--keep-bright-vessels", *cache) == 0
    assert _segment(small_case, tmp_path / "trim", "--vessel-margin", "40", *cache) == 0
    kept, trimmed = (
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "labels.nii.gz")))
        for name in ("keep", "trim")
    )
    assert not ((trimmed > 0) & (kept == 0)).any()  # it only ever takes voxels out of the labels
    reports = {name: json.loads((tmp_path / name / "report.json").read_text()) for name in ("keep", "trim")}
    assert reports["keep"]["vessel_exclusion"] is None
    step = reports["trim"]["vessel_exclusion"]
    assert step["margin_hu"] == 40.0 and step["excluded_ml"] >= 0.0
    assert step["gland_venous_median_hu"] is None or -200 < step["gland_venous_median_hu"] < 400
    # without the venous phase there is no step to record
    arterial = ["--arterial", str(small_case.phases[Phase.ARTERIAL]), "--out", str(tmp_path / "a")]
    assert main(["segment", *arterial, "--no-heatmap", "--progress", "none", "--vessel-margin", "40"]) == 0
    assert json.loads((tmp_path / "a" / "report.json").read_text())["vessel_exclusion"] is None


def test_a_vessel_margin_that_is_not_positive_is_refused(small_case, tiny_models, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _segment(small_case, tmp_path / "w", "--vessel-margin", "0")
    assert exit_info.value.code == 2 and "not a positive number of HU" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_venous_only_input_runs(small_case, tiny_models, tmp_path):
    rc = main(
        [
            "segment",
            "--venous",
            str(small_case.phases[Phase.VENOUS]),
            "--out",
            str(tmp_path / "v"),
            "--no-heatmap",
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert list(report["inputs"]) == ["venous"] and report["segmentation_status"] == "done"


def test_no_pancreas_is_reported_with_its_exit_status(small_case, tmp_path, monkeypatch):
    root = make_tiny_models(tmp_path / "models", gland_bias=-8.0)  # stage 1 that finds nothing
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    out = tmp_path / "none"
    assert _segment(small_case, out) == ExitCode.NO_PANCREAS
    report = json.loads((out / "report.json").read_text())
    assert report["segmentation_status"] == "no_pancreas" and "no pancreas" in report["segmentation_reason"]
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels.nii.gz"))).any()


def test_a_stage1_ensemble_averages_its_members_probabilities(small_case, tmp_path, monkeypatch):
    # Alone, the first member calls everything pancreas (p = 0.95) and the second nothing (p = 0.0003);
    # averaged (0.48) they stay below 0.5, so the cascade must report no pancreas.
    root = make_tiny_models(tmp_path / "models", gland_bias=3.0)
    empty = make_tiny_models(tmp_path / "empty", gland_bias=-8.0)
    add_ensemble_member(
        "stage1_pancreas", empty / "stage1_pancreas.safetensors", version="test+2", card={}, root=root
    )
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    cascade = Cascade.load("cpu")
    images = {p: sitk.ReadImage(str(path)) for p, path in small_case.phases.items()}
    reference = images[Phase.VENOUS]
    probability = cascade.stage1_probability(images, reference, np.ones(3, bool))
    expected = (1 / (1 + np.exp(-3.0)) + 1 / (1 + np.exp(8.0))) / 2
    assert np.allclose(probability, expected, atol=1e-5)
    out = tmp_path / "ens"
    assert _segment(small_case, out) == ExitCode.NO_PANCREAS
    report = json.loads((out / "report.json").read_text())
    stage1 = [m for m in report["models"] if m["name"] == "stage1_pancreas"]
    assert len({m["sha256"] for m in stage1}) == 2


def test_an_existing_output_folder_is_not_overwritten(small_case, tiny_models, tmp_path):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    assert _segment(small_case, out) == ExitCode.OUTPUT_EXISTS
    assert (out / "mine.txt").read_text() == "a user's file" and len(list(out.iterdir())) == 1


def test_missing_weights_fail_clearly(small_case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tmp_path / "empty"))
    assert _segment(small_case, tmp_path / "o") == ExitCode.BAD_INPUT
    assert "No model named 'stage1_pancreas'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_batch_loads_the_models_once(small_case, tiny_models, tmp_path, monkeypatch):
    batch = tmp_path / "batch" / "imagesTs"
    batch.mkdir(parents=True)
    for name in ("a", "b"):
        for path in small_case.phases.values():
            (batch / path.name.replace("case", name)).write_bytes(path.read_bytes())
    loads = []
    original = Cascade.load.__func__
    monkeypatch.setattr(
        Cascade, "load", classmethod(lambda cls, *a, **k: loads.append(1) or original(cls, *a, **k))
    )
    rc = main(
        [
            "segment",
            "--batch",
            str(tmp_path / "batch"),
            "--out",
            str(tmp_path / "preds"),
            "--no-heatmap",
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert rc == 0 and len(loads) == 1
    summary = json.loads((tmp_path / "preds" / "batch.json").read_text())
    assert set(summary["cases"]) == {"a", "b"} and all(
        c["status"] == "done" for c in summary["cases"].values()
    )
    assert (tmp_path / "preds" / "a" / "labels.nii.gz").is_file()


def test_the_likelihood_uses_the_calibration_of_the_phases_given(small_case, tmp_path, monkeypatch):
    """Venous-only input takes the venous fit; a pair without its own fit takes the three-phase fit and says so."""
    from PancreasAILib.cascade.calibration import ALL_PHASES, LikelihoodCalibration, PhaseCalibrations
    from PancreasAILib.models.registry import set_calibration

    monkeypatch.setenv("PANCREASAI_MODELS", str(make_tiny_models(tmp_path / "models")))
    fits = {
        ALL_PHASES: LikelihoodCalibration(1.0, 1.0, 3.0, 20),
        "venous": LikelihoodCalibration(1.0, 1.0, -3.0, 12),
    }
    set_calibration("stage2_tumour", PhaseCalibrations(fits).to_dict())

    def segment(out, *phases):
        args = [a for p in phases for a in (f"--{p.value}", str(small_case.phases[p]))]
        assert main(["segment", *args, "--out", str(out), "--no-heatmap", "--progress", "none"]) == 0
        report = json.loads((out / "report.json").read_text())
        strongest = max((lesion["confidence"] for lesion in report["lesions"]), default=0.0)
        return report, report["pdac_classifier_probability"], strongest

    report, head, strongest = segment(tmp_path / "v", Phase.VENOUS)
    assert report["pdac_likelihood"] == pytest.approx(fits["venous"](head, strongest), abs=2e-3)
    assert any("fitted on 12 cases with venous." in note for note in report["notes"])

    report, head, strongest = segment(tmp_path / "av", Phase.ARTERIAL, Phase.VENOUS)
    assert report["pdac_likelihood"] == pytest.approx(fits[ALL_PHASES](head, strongest), abs=2e-3)
    assert any("none is fitted for arterial, venous" in note for note in report["notes"])


def test_a_second_run_reuses_the_registrations_of_the_alignment_cache(small_case, tiny_models, tmp_path):
    cache = tmp_path / "alignments"
    reports = []
    for name in ("first", "second"):
        assert _segment(small_case, tmp_path / name, "--alignment-cache", str(cache)) == 0
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    first, second = ([a["method"] for a in r["alignment"]] for r in reports)
    assert len(first) == 2 and not any("alignment cache" in m for m in first)
    assert all(m.endswith("reused from the alignment cache") for m in second)
    assert len(list(cache.glob("*.json"))) == 2
    labels = [
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n / "labels.nii.gz")))
        for n in ("first", "second")
    ]
    assert np.array_equal(*labels)


def test_replaying_a_lesion_weighting_on_saved_outputs_matches_running_it(small_case, tiny_models, tmp_path):
    """benchmarks/reweigh_lesions.py tries a weighting without the networks; it must give what a run gives."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "reweigh_lesions.py"
    spec = importlib.util.spec_from_file_location("reweigh_lesions", script)
    reweigh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reweigh)
    # a grade wide enough to reach the tiny networks' lesions (tens of HU from the gland); one
    # registration for both runs (multi-threaded registration differs in its last digits)
    weighting = ("--non-hypo-weight", "0.5", "--alignment-cache", str(tmp_path / "alignments"))
    assert _segment(small_case, tmp_path / "runs" / "hard", *weighting, "--attenuation-ramp", "0") == 0
    assert _segment(small_case, tmp_path / "graded", *weighting, "--attenuation-ramp", "100") == 0
    assert (
        reweigh.main(["--pred", str(tmp_path / "runs"), "--out", str(tmp_path / "replayed"), "--ramp", "100"])
        == 0
    )

    ran = json.loads((tmp_path / "graded" / "report.json").read_text())
    replayed = json.loads((tmp_path / "replayed" / "hard" / "report.json").read_text())
    hard = json.loads((tmp_path / "runs" / "hard" / "report.json").read_text())
    fields = ("id", "confidence", "network_confidence", "centroid_mm")
    assert [[lesion[f] for f in fields] for lesion in replayed["lesions"]] == [
        [lesion[f] for f in fields] for lesion in ran["lesions"]
    ]
    assert [lesion["confidence"] for lesion in hard["lesions"]] != [
        lesion["confidence"] for lesion in ran["lesions"]
    ]
    assert replayed["attenuation_ramp_hu"] == 100.0
    # the report keeps the head to 4 decimals, so the replayed likelihood may differ in the last one
    assert replayed["pdac_likelihood"] == pytest.approx(ran["pdac_likelihood"], abs=1.5e-4)

    def detection(folder: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "detection_map.nii.gz")))

    assert np.array_equal(detection(tmp_path / "replayed" / "hard"), detection(tmp_path / "graded"))
    assert (tmp_path / "replayed" / "hard" / "labels.nii.gz").resolve() == (
        tmp_path / "runs" / "hard" / "labels.nii.gz"
    ).resolve()  # the label map is linked, never rewritten
    with pytest.raises(SystemExit) as refused:  # an earlier replay is never overwritten
        reweigh.main(["--pred", str(tmp_path / "runs"), "--out", str(tmp_path / "replayed"), "--ramp", "5"])
    assert refused.value.code == 2
