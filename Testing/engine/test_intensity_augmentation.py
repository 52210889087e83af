"""Intensity augmentation: the strong recipe changes how far apart tissues lie, never their order."""

from __future__ import annotations

import numpy as np
import pytest

from PancreasAILib.cascade.grids import HU_OFFSET, HU_SCALE
from PancreasAILib.training.augment import (
    INTENSITY_AUGMENTATIONS,
    IntensityAugmentation,
    augment_hu,
    bend_hu,
    gamma_soft_tissue,
    network_input,
    scale_study_contrast,
)

# Venous-phase tissue levels (HU) of a pancreas with a hypo-attenuating lesion, after the shared data README.
FAT, TUMOUR, GLAND, VESSEL, BONE = -100.0, 60.0, 110.0, 170.0, 700.0


def tissue_phantom() -> np.ndarray:
    """(3, 8, 40, 40): five flat tissue blocks per phase, big enough that noise and blur leave their medians."""
    image = np.full((3, 8, 40, 40), -1000.0, np.float32)
    for k, hu in enumerate((FAT, TUMOUR, GLAND, VESSEL, BONE)):
        image[:, :, k * 8 : k * 8 + 8, :] = hu
    return image


def tissue_levels(normalised: np.ndarray, phase: int) -> np.ndarray:
    """Median HU of each tissue block in one phase, from the network input."""
    hu = normalised[phase] * HU_SCALE + HU_OFFSET
    return np.array([np.median(hu[2:6, k * 8 + 2 : k * 8 + 6, 5:35]) for k in range(5)])


def test_a_bent_hu_scale_keeps_tissue_order_air_fat_and_continuity():
    rng = np.random.default_rng(0)
    hu = np.linspace(-1000.0, 1500.0, 25001, dtype=np.float32)
    for _ in range(50):
        bent = bend_hu(hu, rng, (0.6, 1.5))
        assert np.all(np.diff(bent) > 0)  # monotone: a darker lesion stays darker
        assert np.allclose(bent[hu < -150], hu[hu < -150])  # air and fat keep their place
        assert np.max(np.abs(np.diff(bent))) < 0.1 * 1.5 + 1e-3  # no jump at the curve's ends
        shift = bent[-1] - hu[-1]
        assert np.allclose(bent[hu > 350] - hu[hu > 350], shift, atol=1e-3)  # above: moves as a whole


def test_gamma_on_soft_tissue_keeps_its_window_ends():
    hu = np.linspace(-400.0, 600.0, 10001, dtype=np.float32)
    for gamma in (0.7, 1.0, 1.5):
        out = gamma_soft_tissue(hu, gamma)
        assert np.all(np.diff(out) >= 0)
        outside = (hu <= -150) | (hu >= 350)
        assert np.array_equal(out[outside], hu[outside])
    darker = gamma_soft_tissue(np.array([100.0], np.float32), 1.5)[0]
    assert darker < 100.0  # gamma > 1 darkens the middle of the window


def lesion_to_vessel_ratios(recipe: IntensityAugmentation, draws: int = 60) -> np.ndarray:
    """(gland - tumour) / (vessel - gland) in the venous channel over many draws of `recipe`."""
    rng = np.random.default_rng(1)
    image, mask = tissue_phantom(), np.array([True, True, True])
    ratios = []
    for _ in range(draws):
        fat, tumour, gland, vessel, _ = tissue_levels(
            network_input(augment_hu(image, mask, rng, recipe), mask), 1
        )
        assert fat < tumour < gland < vessel  # order kept by every recipe
        ratios.append((gland - tumour) / (vessel - gland))
    return np.array(ratios)


def test_strong_augmentation_changes_tissue_spacing_that_standard_keeps():
    truth = (GLAND - TUMOUR) / (VESSEL - GLAND)
    standard = lesion_to_vessel_ratios(INTENSITY_AUGMENTATIONS["standard"])
    strong = lesion_to_vessel_ratios(INTENSITY_AUGMENTATIONS["strong"])
    # Standard only scales soft tissue about one point: ratios stay put up to noise and blur.
    assert np.max(np.abs(standard - truth)) < 0.1
    # Strong bends the scale: the lesion's contrast relative to the vessels spreads both ways.
    assert strong.min() < truth - 0.15 and strong.max() > truth + 0.15


def test_missing_phases_stay_zero_under_the_strong_recipe():
    rng = np.random.default_rng(2)
    mask = np.array([False, True, False])
    out = network_input(augment_hu(tissue_phantom(), mask, rng, INTENSITY_AUGMENTATIONS["strong"]), mask)
    assert not out[0].any() and not out[2].any() and out[1].any()


@pytest.mark.parametrize(
    "field, value", [("gain", (1.2, 0.9)), ("curve_slopes", (0.0, 1.0)), ("p_curve", 1.5)]
)
def test_a_recipe_out_of_range_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        IntensityAugmentation(**{field: value})


def test_a_training_configuration_refuses_an_unknown_recipe(tmp_path):
    from PancreasAILib.training.trainer import TrainConfig

    with pytest.raises(ValueError, match="standard, strong"):
        TrainConfig(stage=2, run_dir=tmp_path, intensity="extreme")


def test_study_contrast_is_monotone_continuous_and_keeps_air():
    hu = np.linspace(-1000.0, 1500.0, 25001, dtype=np.float32)
    for factor in (0.7, 1.0, 1.35, 1.55):
        out = scale_study_contrast(hu, factor)
        assert np.all(np.diff(out) > 0)  # order of tissues kept, across the fat ramp too
        assert np.allclose(out[hu <= -300], hu[hu <= -300])  # air and lung stay
        body = hu >= -100
        assert np.allclose(out[body] - 40.0, (hu[body] - 40.0) * factor, atol=1e-2)
    with pytest.raises(ValueError, match="fold"):
        IntensityAugmentation(study_contrast=(0.7, 1.7))


def test_contrast_recipe_moves_all_phases_of_a_patch_together():
    """The gland-to-lesion and gland-to-vessel gaps change by one factor in every phase of a patch."""
    recipe = IntensityAugmentation(
        gain=(1.0, 1.0), offset_hu=0.0, p_blur=0.0, p_noise=0.0, p_study_contrast=1.0
    )
    rng = np.random.default_rng(4)
    image, mask = tissue_phantom(), np.array([True, True, True])
    image[0] += 30.0  # phases differ, the factor must not
    factors = []
    for _ in range(20):
        out = network_input(augment_hu(image, mask, rng, recipe), mask)
        per_phase = [
            (tissue_levels(out, p)[2] - tissue_levels(out, p)[1]) / (GLAND - TUMOUR) for p in range(3)
        ]
        assert np.ptp(per_phase) < 0.02
        factors.append(per_phase[0])
    assert min(factors) < 0.85 and max(factors) > 1.2  # the draws span the recipe's range


def test_levels_move_with_their_phase_through_every_pointwise_map():
    """A gland level measured before augmentation stays the gland's level after it (stage 2, gland-relative)."""
    recipe = IntensityAugmentation(
        gain=(0.7, 1.4),
        offset_hu=50.0,
        p_blur=0.0,
        p_noise=0.0,
        p_curve=1.0,
        p_gamma=1.0,
        p_study_contrast=1.0,
    )
    rng = np.random.default_rng(11)
    image, mask = tissue_phantom(), np.array([True, False, True])
    for _ in range(10):
        levels = np.full(3, GLAND, np.float32)
        out = augment_hu(image, mask, rng, recipe, levels=levels)
        for p in (0, 2):
            assert levels[p] == pytest.approx(np.median(out[p, 2:6, 18:22, 5:35]), abs=0.5)
        assert not np.allclose(levels[[0, 2]], GLAND, atol=2.0)  # the draws did move them
