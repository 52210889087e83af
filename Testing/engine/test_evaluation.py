"""Evaluation metrics against hand-computed values, PANORAMA lesion matching, and the evaluate command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasAILib.cli.main import main
from PancreasAILib.evaluation.detection import LesionHits, auroc, average_precision, match_lesions
from PancreasAILib.evaluation.overlap import overlap_metrics


def _ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius**2


def test_overlap_of_a_shifted_sphere():
    shape = (40, 40, 40)
    true = _ball(shape, (20, 20, 20), 10)
    pred = _ball(shape, (20, 20, 23), 10)  # shifted 3 voxels = 3 mm along x at 1 mm
    m = overlap_metrics(pred, true, (1.0, 1.0, 1.0), tolerance_mm=2.0)
    assert 0.75 < m.dice < 0.85
    assert 2.0 <= m.hd95_mm <= 3.2
    assert 0.4 < m.nsd < 0.9
    same = overlap_metrics(true, true, (2.0, 1.0, 1.0))
    assert same.dice == 1.0 and same.nsd == 1.0 and same.hd95_mm == 0.0


def test_empty_masks_follow_the_stated_conventions():
    empty = np.zeros((5, 5, 5), bool)
    full = np.ones((5, 5, 5), bool)
    assert overlap_metrics(empty, empty, (1, 1, 1)).dice == 1.0
    missed = overlap_metrics(empty, full, (1, 1, 1))
    assert missed.dice == 0.0 and missed.nsd == 0.0 and np.isnan(missed.hd95_mm)


def test_lesion_matching_ignores_extra_overlapping_candidates_and_counts_distant_ones():
    shape = (20, 40, 40)
    truth = _ball(shape, (10, 10, 10), 4)
    detection = np.zeros(shape, np.float32)
    detection[_ball(shape, (10, 10, 10), 4)] = 0.8  # the match
    detection[10, 10, 15:18] = 0.0
    side = _ball(shape, (10, 10, 16), 2) & ~_ball(shape, (10, 10, 10), 4)
    side_touching = side.copy()
    side_touching[10, 10, 14] = True  # touches the true lesion: ignored, not a false positive
    detection[side_touching] = 0.5
    detection[_ball(shape, (10, 30, 30), 3)] = 0.3  # far away: a false positive
    hits = match_lesions(detection, truth, 0.10)
    assert hits.true_lesions == 1
    assert [(round(c, 2), tp) for c, tp in sorted(hits.scored)] == [(0.3, False), (0.8, True)]


def test_average_precision_and_auroc_on_known_rankings():
    perfect = [LesionHits([(0.9, True)], 1), LesionHits([(0.2, False)], 0)]
    assert average_precision(perfect) == 1.0
    worse = [LesionHits([(0.4, True)], 1), LesionHits([(0.9, False)], 0)]
    assert average_precision(worse) == pytest.approx(0.5)
    missed = [LesionHits([], 2)]
    assert average_precision(missed) == 0.0
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))


def _write(path, array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_evaluate_command_prints_the_table_and_writes_json(tmp_path, capsys):
    shape = (16, 48, 48)
    for k in range(4):
        truth = np.zeros(shape, np.uint8)
        truth[_ball(shape, (8, 24, 24), 10)] = 1
        if k < 2:
            truth[_ball(shape, (8, 24, 20 + k), 4)] = 2
        pred = truth.copy()
        pred[_ball(shape, (8, 24, 33), 2) & (truth > 0)] = 1 if k < 3 else 2  # case 3: a false tumour
        _write(tmp_path / "gt" / "labelsTr" / f"case{k}.nii.gz", truth)
        _write(tmp_path / "pred" / f"case{k}" / "labels.nii.gz", pred)
        detection = (pred == 2).astype(np.float32) * [0.9, 0.8, 0.0, 0.85][k]
        _write(tmp_path / "pred" / f"case{k}" / "detection_map.nii.gz", detection)
        (tmp_path / "pred" / f"case{k}" / "report.json").write_text(
            json.dumps({"pdac_likelihood": [0.9, 0.8, 0.1, 0.6][k]})
        )
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
                "--bootstrap",
                "50",
                "--json-out",
                str(out),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "tumour_dice" in table and "lesion_ap_iou0.10" in table
    result = json.loads(out.read_text())
    assert result["cases"] == 4 and result["with_tumour"] == 2
    assert result["summary"]["tumour_dice"] == pytest.approx(1.0)
    assert result["summary"]["auroc"] == pytest.approx(1.0)
    # ranking 0.9 TP, 0.85 FP (case 3), 0.8 TP: AP = 0.5 * 1 + 0.5 * 2/3
    assert result["summary"]["lesion_ap_iou0.10"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result["per_case"][3]["false_tumour_ml"] > 0


def test_a_prediction_on_the_arterial_anatomy_is_scored_against_the_truth_moved_there(tmp_path):
    """Synthetic truth is drawn on the venous anatomy; arterial-only input is segmented on the arterial
    one, which the generator moved by a recorded rigid motion. A perfect arterial outline scores 1."""
    from PancreasAILib.evaluation.evaluate import evaluate_folder
    from PancreasAILib.phases import Phase
    from PancreasAILib.synthesis import SynthesisConfig
    from PancreasAILib.synthesis.dataset import recorded_motions, write_dataset

    config = SynthesisConfig.coarse(p_tumour=1.0, misalign_max_mm=6.0, misalign_max_deg=4.0)
    data = tmp_path / "data"
    write_dataset(data, n_cases=1, seed=4, config=config, workers=1, progress=False)
    truth = sitk.ReadImage(str(data / "labelsTr" / "PANSYN_0000.nii.gz"))
    motions = recorded_motions(data, "PANSYN_0000")
    motion = motions.get(Phase.ARTERIAL)
    assert motion is not None and motions.get(Phase.VENOUS) is None
    arterial_outline = sitk.Resample(truth, truth, motion.GetInverse(), sitk.sitkNearestNeighbor, 0)
    pred = tmp_path / "pred" / "PANSYN_0000"
    pred.mkdir(parents=True)
    sitk.WriteImage(arterial_outline, str(pred / "labels.nii.gz"))
    for phase, expected_perfect in (("arterial", True), ("venous", False)):
        (pred / "report.json").write_text(json.dumps({"reference_phase": phase, "pdac_likelihood": 0.9}))
        dice = evaluate_folder(tmp_path / "pred", data, resamples=0)["summary"]["pancreas_dice"]
        assert (dice > 0.995) == expected_perfect, (phase, dice)
