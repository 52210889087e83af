"""The attenuation check of lesion candidates: darker than the gland in some phase, or weighed down."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from PancreasAILib.cascade.attenuation import (
    confidence_factor,
    effective_weighting,
    gland_medians,
    weigh_by_attenuation,
)
from PancreasAILib.cascade.lesions import LesionCandidate
from PancreasAILib.export.report import Report

ALL = np.array([True, True, True])
VENOUS = np.array([False, True, False])


def _gland_with_two_lesions(seed=0):
    """A noisy gland (arterial 120, venous 100, delayed 75 HU) with lesion 1 brighter than it in every
    phase and lesion 2 darker only in the arterial phase; each 5 x 5 x 5 voxels."""
    rng = np.random.default_rng(seed)
    shape = (20, 40, 40)
    gland = np.zeros(shape, bool)
    gland[2:18, 5:35, 5:35] = True
    hu = np.full((3, *shape), -100.0, np.float32)  # fat around it
    for p, level in enumerate((120.0, 100.0, 75.0)):
        hu[p][gland] = level + rng.normal(0, 15, gland.sum())
    regions = np.zeros(shape, np.int16)
    regions[5:10, 10:15, 10:15] = 1
    regions[10:15, 20:25, 20:25] = 2
    hu[:, regions == 1] += np.array([12.0, 15.0, 10.0])[:, None]
    hu[:, regions == 2] += np.array([-40.0, 8.0, 5.0])[:, None]
    detection = np.zeros(shape, np.float32)
    detection[regions == 1], detection[regions == 2] = 0.9, 0.7
    lesions = [
        LesionCandidate(1, 0.9, 0.125, 10.0, (0.0, 0.0, 0.0), 125),
        LesionCandidate(2, 0.7, 0.125, 10.0, (5.0, 5.0, 5.0), 125),
    ]
    return lesions, regions, detection, hu, gland


def test_a_lesion_darker_in_no_phase_is_weighed_down_and_ranks_below_a_hypo_attenuating_one():
    lesions, regions, detection, hu, gland = _gland_with_two_lesions()
    weighed, new_detection = weigh_by_attenuation(lesions, regions, detection, hu, ALL, gland, 0.5)
    first, second = weighed
    assert (first.id, first.centroid_mm, first.confidence) == (1, (5.0, 5.0, 5.0), 0.7)  # was lesion 2
    assert first.hypoattenuating is True and first.attenuation_hu["arterial"] < -30
    assert first.attenuation_hu["venous"] > 0  # darker in one phase is enough
    assert second.hypoattenuating is False and second.network_confidence == 0.9
    assert second.confidence == pytest.approx(0.45)
    assert all(v > 5 for v in second.attenuation_hu.values())
    # the detection map (what lesion AP is computed on) holds the confidences as they now are
    assert set(np.unique(new_detection[regions == 1])) == {np.float32(0.45)}
    assert set(np.unique(new_detection[regions == 2])) == {np.float32(0.7)}
    assert detection[regions == 1].max() == np.float32(0.9)  # the input is left as it was


def test_only_the_phases_given_are_compared_and_weight_one_only_records():
    lesions, regions, detection, hu, gland = _gland_with_two_lesions()
    weighed, new_detection = weigh_by_attenuation(lesions, regions, detection, hu, VENOUS, gland, 1.0)
    assert [set(lesion.attenuation_hu) for lesion in weighed] == [{"venous"}, {"venous"}]
    # venous alone: lesion 2 is brighter too (+8 HU), so neither is hypo-attenuating, and nothing moves
    assert [lesion.hypoattenuating for lesion in weighed] == [False, False]
    assert [lesion.confidence for lesion in weighed] == [0.9, 0.7]
    assert np.array_equal(new_detection, detection)
    weighed, _ = weigh_by_attenuation(lesions, regions, detection, hu, VENOUS, gland, 0.0)
    assert [lesion.confidence for lesion in weighed] == [0.0, 0.0]


def test_the_delayed_phase_is_no_evidence_either_way():
    lesions, regions, detection, hu, gland = _gland_with_two_lesions()
    hu[2][regions == 1] -= 30.0  # lesion 1 now darker than the gland in the delayed phase only
    hu[0][regions == 2] += 45.0  # lesion 2 no longer darker in the arterial phase
    three = np.array([True, True, True])
    weighed, _ = weigh_by_attenuation(lesions, regions, detection, hu, three, gland, 0.5)
    assert [(lesion.network_confidence, lesion.hypoattenuating) for lesion in weighed] == [
        (0.9, False),
        (0.7, False),
    ]
    assert weighed[0].attenuation_hu["delayed"] < -15  # recorded, but not counted
    delayed_only = np.array([False, False, True])
    weighed, new_detection = weigh_by_attenuation(lesions, regions, detection, hu, delayed_only, gland, 0.5)
    assert [(lesion.confidence, lesion.hypoattenuating) for lesion in weighed] == [(0.9, None), (0.7, None)]
    assert [set(lesion.attenuation_hu) for lesion in weighed] == [{"delayed"}, {"delayed"}]
    assert np.array_equal(new_detection, detection)


def test_without_enough_gland_to_compare_with_nothing_is_weighed():
    lesions, regions, detection, hu, _ = _gland_with_two_lesions()
    gland = regions > 0  # the whole "gland" is lesion
    assert gland_medians(regions, hu, ALL, gland) is None
    weighed, _ = weigh_by_attenuation(lesions, regions, detection, hu, ALL, gland, 0.5)
    assert [(lesion.confidence, lesion.hypoattenuating) for lesion in weighed] == [(0.9, None), (0.7, None)]


def test_a_weight_outside_zero_to_one_is_refused():
    lesions, regions, detection, hu, gland = _gland_with_two_lesions()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        weigh_by_attenuation(lesions, regions, detection, hu, ALL, gland, 1.5)


def test_the_graded_weight_runs_from_one_to_the_weight_across_the_glands_attenuation():
    def factor(venous_hu: float, ramp: float = 5.0) -> float:
        return confidence_factor({"venous": venous_hu}, 0.5, ramp)

    assert factor(-5.0) == factor(-40.0) == 1.0  # clearly darker: all of its confidence
    assert factor(5.0) == factor(40.0) == 0.5  # clearly not: the weight
    assert factor(0.0) == pytest.approx(0.75)
    steps = [factor(hu) for hu in np.linspace(-10, 10, 81)]
    assert all(a >= b for a, b in itertools.pairwise(steps))  # never rises with brightness
    # why it is graded: 1 HU either side of the gland moves the weight a little, not by half
    assert factor(-1.0) - factor(1.0) == pytest.approx(0.1)
    assert confidence_factor({"venous": -1.0}, 0.5, 0.0) - confidence_factor({"venous": 1.0}, 0.5, 0.0) == 0.5
    # the darker of the arterial and venous phases counts; the delayed phase and no evidence do not
    assert confidence_factor({"arterial": -20.0, "venous": 8.0}, 0.5, 5.0) == 1.0
    assert confidence_factor({"delayed": 30.0}, 0.5, 5.0) == confidence_factor(None, 0.5, 5.0) == 1.0


def test_lesions_are_weighed_by_the_grade_of_their_measured_contrast():
    lesions, regions, detection, hu, gland = _gland_with_two_lesions()
    hu[1][regions == 2] -= 6.0  # lesion 2: about 2 HU above the gland in the venous phase, near-iso
    weighed, new_detection = weigh_by_attenuation(lesions, regions, detection, hu, VENOUS, gland, 0.5, 10.0)
    by_network = {lesion.network_confidence: lesion for lesion in weighed}
    near_iso, bright = by_network[0.7], by_network[0.9]
    assert 0.0 < near_iso.attenuation_hu["venous"] < 5.0 < bright.attenuation_hu["venous"]
    for lesion in weighed:  # each keeps the share its own measured contrast gives, on its voxels too
        share = 0.5 + 0.5 * float(np.clip((10.0 - lesion.attenuation_hu["venous"]) / 20.0, 0.0, 1.0))
        assert lesion.confidence == pytest.approx(lesion.network_confidence * share, abs=1e-4)
        assert new_detection[regions == (2 if lesion is near_iso else 1)].max() == np.float32(
            lesion.confidence
        )
    assert bright.confidence == 0.45  # more than 10 HU brighter: the weight alone
    assert 0.5 < near_iso.confidence / 0.7 < 0.75  # near-iso: between
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number >= 0 HU"):
            weigh_by_attenuation(lesions, regions, detection, hu, VENOUS, gland, 0.5, bad)


def test_with_weight_one_every_grade_is_the_same_weighting():
    assert effective_weighting(1.0, 5.0) == effective_weighting(1.0, 0.0) == (1.0, 0.0)
    assert effective_weighting(0.5, 5.0) == (0.5, 5.0)
    assert confidence_factor({"venous": 3.0}, 1.0, 5.0) == confidence_factor({"venous": 3.0}, 1.0, 0.0) == 1.0


def test_reports_carry_the_attenuation_and_older_reports_still_read():
    lesion = {
        "id": 1,
        "confidence": 0.45,
        "volume_ml": 1.2,
        "longest_axial_diameter_mm": 15.0,
        "centroid_mm": [1.0, 2.0, 3.0],
        "network_confidence": 0.9,
        "attenuation_hu": {"venous": 12.5},
        "hypoattenuating": False,
    }
    report = Report(reference_phase="venous").to_dict()
    report["lesions"] = [lesion]
    read = Report.from_dict(report)
    assert read.lesions[0].attenuation_hu == {"venous": 12.5} and read.lesions[0].hypoattenuating is False
    older = {
        k: v
        for k, v in lesion.items()
        if k not in ("network_confidence", "attenuation_hu", "hypoattenuating")
    }
    report.update(schema_version="1.1", lesions=[older])
    read = Report.from_dict(report)  # fields added after a report's version read as their defaults
    assert read.lesions[0].attenuation_hu is None and read.lesions[0].network_confidence is None
    report.pop("pdac_classifier_probability")  # added in 1.1: a 1.1 report must have it
    with pytest.raises(ValueError, match="pdac_classifier_probability is missing"):
        Report.from_dict(report)
    report["schema_version"] = "1.0"
    assert Report.from_dict(report).pdac_classifier_probability is None
    report["lesions"] = [lesion]  # a 1.2 field in a report that says 1.0 is still checked for its type
    lesion["hypoattenuating"] = "no"
    with pytest.raises(ValueError, match="hypoattenuating must be true or false"):
        Report.from_dict(report)
