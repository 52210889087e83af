"""Stage 2 relative to the gland: the level ignores tumour and edge fat, and training, validation and
inference all hand the network each phase shifted onto the same reference."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from cascade_fixtures import make_small_case
from test_training import CHANNELS, cache, small_case, stage2_command  # noqa: F401  (fixtures)

from PancreasAILib.cascade import runner
from PancreasAILib.cascade.gland_level import (
    gland_levels,
    reference_levels,
    relative_to_gland,
    shift_to_reference,
)
from PancreasAILib.cascade.grids import HU_OFFSET, HU_SCALE, resample_onto
from PancreasAILib.cascade.spec import STAGE1, STAGE2, StageSpec
from PancreasAILib.cli.main import main
from PancreasAILib.models.registry import get_entry
from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.training.augment import scale_study_contrast
from PancreasAILib.training.datasets import PatchSampler, load_cache

ALL = np.array([True, True, True])


def gland_phantom(gland_hu=(120.0, 100.0, 75.0), tumour_drop=40.0, seed=0):
    """(3, 20, 60, 60) HU: fat around an elliptic gland with a dark tumour (a fifth of it) and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:20, :60, :60].astype(np.float32)
    gland = ((y - 30) / 20) ** 2 + ((x - 30) / 25) ** 2 + ((z - 10) / 8) ** 2 <= 1.0
    tumour = gland & (x > 41)
    image = np.full((3, 20, 60, 60), -100.0, np.float32)
    for p, level in enumerate(gland_hu):
        image[p][gland] = level
        image[p][tumour] = level - tumour_drop
    image += rng.normal(0.0, 12.0, image.shape).astype(np.float32)
    return image, gland, tumour


def test_the_level_is_the_parenchyma_not_the_tumour_or_the_edge_fat():
    image, gland, tumour = gland_phantom()
    assert 0.15 < tumour.sum() / gland.sum() < 0.3
    coarse = gland | np.roll(gland, 2, axis=2)  # a coarse mask that takes in fat at one edge
    for region in (gland, coarse):
        levels = gland_levels(image, region, ALL)
        assert np.allclose(levels, (120.0, 100.0, 75.0), atol=8.0), levels
        assert np.all(levels > np.array([np.mean(image[p][region]) for p in range(3)]))  # above the mean


def test_lower_contrast_is_undone_up_to_the_lesion_contrast():
    """The same gland at x0.75 contrast: the gland's input level comes back; the lesion stays darker."""
    image, gland, tumour = gland_phantom()
    reference = (110.0, 92.0, 69.0)
    low = scale_study_contrast(image, 0.75)
    normal_in = relative_to_gland(image, gland, ALL, reference)
    low_in = relative_to_gland(low, gland, ALL, reference)
    parenchyma = gland & ~tumour
    for p in range(3):
        before = abs(np.median(low[p][parenchyma]) - np.median(image[p][parenchyma]))
        after = abs(np.median(low_in[p][parenchyma]) - np.median(normal_in[p][parenchyma]))
        assert before > 8.0 and after < 3.0, (p, before, after)
        assert np.median(low_in[p][tumour]) < np.median(low_in[p][parenchyma]) - 20.0


def test_missing_phases_and_tiny_glands_are_left_alone():
    image, gland, _ = gland_phantom()
    venous_only = np.array([False, True, False])
    shifted = relative_to_gland(image, gland, venous_only, (0.0, 0.0, 0.0))
    assert np.array_equal(shifted[0], image[0]) and np.array_equal(shifted[2], image[2])
    assert abs(np.percentile(shifted[1][gland], 65)) < 0.5
    speck = np.zeros_like(gland)
    speck[10, 30, 30:40] = True  # 10 voxels: no reliable level
    assert np.array_equal(relative_to_gland(image, speck, ALL, (0.0, 0.0, 0.0)), image)
    assert relative_to_gland(image, gland, ALL, None) is image  # absolute HU: untouched
    with pytest.raises(ValueError, match="2 reference levels for 3 phases"):
        shift_to_reference(image, gland_levels(image, gland, ALL), (1.0, 2.0))


def test_reference_levels_come_from_cases_with_the_generator_intensities():
    normal, gland, tumour = gland_phantom()
    odd, _, _ = gland_phantom(gland_hu=(300.0, 10.0, 250.0), seed=1)
    label = gland.astype(np.uint8) + tumour
    meta = json.dumps({"domain_randomised": False})
    cases = [
        {"s2_image": normal, "s2_label": label, "phase_mask": ALL, "meta": meta},
        {
            "s2_image": odd,
            "s2_label": label,
            "phase_mask": ALL,
            "meta": json.dumps({"domain_randomised": True}),
        },
    ]
    assert np.allclose(reference_levels(cases), (120.0, 100.0, 75.0), atol=8.0)
    with pytest.raises(ValueError, match="No cases"):
        reference_levels(cases[1:])


def test_specification_carries_the_levels_and_registration_does_not_take_them_from_the_release():
    spec = replace(STAGE2, gland_reference_hu=(110.0, 92.0, 69.0))
    assert StageSpec.from_dict(spec.to_dict()) == spec
    assert StageSpec.from_dict(STAGE2.to_dict()).gland_reference_hu is None  # older manifests: absolute HU
    released = replace(STAGE2, non_hypo_lesion_weight=0.5).to_dict()
    assert STAGE2.with_choices_of(released).gland_reference_hu is None  # not a release choice
    assert spec.with_choices_of(released).gland_reference_hu == (110.0, 92.0, 69.0)


def test_training_patches_are_shifted_onto_the_reference(cache):  # noqa: F811
    cases = load_cache(cache)
    reference = (160.0, 150.0, 140.0)  # far from the generator's levels, so the shift shows

    def gland_medians(gland_reference):
        sampler = PatchSampler(
            cases, 2, (16, 48, 48), seed=3, phase_dropout=False, gland_reference_hu=gland_reference
        )
        found = []
        for _ in range(12):
            sample = sampler.sample()
            gland = sample["label"] > 0
            if gland.sum() > 300:
                hu = sample["image"] * HU_SCALE + HU_OFFSET
                found.append([np.percentile(hu[p][gland], 65) for p in range(3)])
        return np.median(np.array(found), axis=0)

    shifted, plain = gland_medians(reference), gland_medians(None)
    assert np.all(np.abs(shifted - reference) < 20.0), shifted
    assert np.all(np.abs(plain - reference) > 30.0), plain


class TrueGland:
    """An external stage 1 that finds the true gland (so the test looks at stage 2's input only)."""

    def __init__(self, labels):
        self.labels = labels

    def predict_probability(self, image_hu, mask, grid):
        return resample_onto(self.labels > 0, grid)


def test_inference_hands_stage2_the_gland_shifted_onto_the_reference(tmp_path, monkeypatch):
    case = make_small_case(tmp_path / "case", seed=5)
    seen = {}

    def fake_stage2(net, image, prior, mask, patch, device, mirror=False):
        seen["hu"], seen["prior"] = image * HU_SCALE + HU_OFFSET, prior
        probs = np.zeros((3, *image.shape[1:]), np.float32)
        probs[0] = 1.0
        return probs, 0.1

    monkeypatch.setattr(runner, "predict_stage2", fake_stage2)
    reference = (170.0, 150.0, 130.0)
    levels = {}
    for name, gland_reference in (("absolute", None), ("relative", reference)):
        spec2 = replace(STAGE2, gland_reference_hu=gland_reference)
        cascade = runner.Cascade(TrueGland(case.labels), None, STAGE1, spec2, [], torch.device("cpu"))
        result = cascade.run(case.images, case.images[Phase.VENOUS])
        assert result.pancreas_found
        region = seen["prior"] >= 0.5
        levels[name] = np.array([np.percentile(seen["hu"][p][region], 65) for p in range(len(PHASE_ORDER))])
    assert np.allclose(levels["relative"], reference, atol=1.0), levels
    assert np.all(np.abs(levels["absolute"] - reference) > 20.0), levels


def test_train_command_stores_the_levels_with_the_weights_and_continuing_keeps_them(
    cache,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tmp_path / "models"))
    first = [*stage2_command(cache, tmp_path / "run"), "--steps", "2", "--val-every", "2", "--device", "cpu"]
    assert (
        main([*first, "--channels", *CHANNELS, "--gland-relative", "--register", "--version-tag", "1"]) == 0
    )
    trained = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["spec"][
        "gland_reference_hu"
    ]
    assert trained is not None and len(trained) == 3
    assert get_entry("stage2_tumour").input_spec["gland_reference_hu"] == trained
    assert "relative to the gland" in capsys.readouterr().out
    # Continued from those weights without the option: the network still gets the input it learnt on.
    again = [*stage2_command(cache, tmp_path / "run2"), "--steps", "2", "--val-every", "2", "--device", "cpu"]
    assert main([*again, "--init-from-shipped", "--register", "--version-tag", "2"]) == 0
    entry = get_entry("stage2_tumour")
    assert entry.version == "2" and entry.input_spec["gland_reference_hu"] == trained


def test_a_resumed_run_keeps_its_levels_and_an_ensemble_refuses_other_levels(
    cache,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tmp_path / "models"))
    run = tmp_path / "run"
    command = [*stage2_command(cache, run), "--val-every", "2", "--device", "cpu", "--channels", *CHANNELS]
    assert main([*command, "--steps", "2", "--gland-relative"]) == 0
    config = run / "config.json"
    recorded = json.loads(config.read_text())
    recorded["train"]["spec"]["gland_reference_hu"] = [101.0, 102.0, 103.0]  # as if measured on other cases
    config.write_text(json.dumps(recorded))
    assert main([*command, "--steps", "4", "--gland-relative", "--register", "--version-tag", "1"]) == 0
    assert json.loads(config.read_text())["train"]["spec"]["gland_reference_hu"] == [101.0, 102.0, 103.0]
    assert get_entry("stage2_tumour").input_spec["gland_reference_hu"] == [101.0, 102.0, 103.0]
    # A network trained on absolute HU cannot join it as an ensemble member.
    plain = [*stage2_command(cache, tmp_path / "plain"), "--val-every", "2", "--device", "cpu"]
    assert main([*plain, "--channels", *CHANNELS, "--steps", "2", "--register", "--ensemble"]) != 0
    assert "other gland levels" in capsys.readouterr().err
    assert len(get_entry("stage2_tumour").member_entries()) == 1
