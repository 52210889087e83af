"""The bright-vessel step: enhanced vein that the network labelled pancreas goes back to background."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from PancreasAILib.cascade.vessels import bright_vessels, check_margin, move_to_background
from PancreasAILib.phases import Phase
from PancreasAILib.synthesis import SynthesisConfig, procedural_anatomy, synthesize_case
from PancreasAILib.synthesis.anatomy import Organ

SPACING = (3.0, 2.0, 2.0)  # z, y, x mm: stage 2's grid


def _gland_vein_and_spot(seed=0, vein_hu=170.0):
    """A noisy gland at 95 HU (venous), a vein at `vein_hu` running through its edge and on beyond
    it, and a bright 4-voxel spot enclosed by the gland (a calcification, say)."""
    rng = np.random.default_rng(seed)
    shape = (16, 48, 64)
    hu = rng.normal(-90.0, 15.0, shape).astype(np.float32)  # fat
    gland = np.zeros(shape, bool)
    gland[3:13, 12:36, 8:56] = True
    vein = np.zeros(shape, bool)
    vein[5:10, 30:38, :] = True  # along the gland's back edge and out of both ends of the box
    spot = np.zeros(shape, bool)
    spot[7:9, 20:22, 30:32] = True
    hu[gland] = rng.normal(95.0, 15.0, gland.sum())
    hu[vein] = rng.normal(vein_hu, 15.0, vein.sum())
    hu[spot] = 300.0
    labelled = gland | (vein & ndi.binary_dilation(gland, iterations=2))  # the network's gland bleeds in
    return hu, labelled, gland, vein, spot


def test_vein_inside_the_labelled_gland_is_taken_out_and_the_gland_and_an_enclosed_bright_spot_stay():
    hu, labelled, gland, vein, spot = _gland_vein_and_spot()
    result = bright_vessels(hu, labelled, SPACING, 40.0)
    taken = result.mask
    vein_labelled = labelled & vein
    assert taken[vein_labelled].mean() > 0.85  # most of the vein the gland had swallowed
    assert not taken[spot].any()  # enclosed by the gland: left for the reader
    assert taken[gland & ~vein].mean() < 0.01  # the gland itself, partial-volume edge aside
    assert not taken[~labelled].any()  # only what was labelled pancreas can be taken out
    assert 80 < result.gland_median_hu < 130
    assert result.volume_ml(SPACING) == pytest.approx(taken.sum() * 12 / 1000)


def test_nothing_is_taken_when_the_vein_is_not_much_brighter_or_the_gland_is_too_small():
    hu, labelled, *_ = _gland_vein_and_spot(vein_hu=120.0)  # poor venous enhancement: +25 HU
    assert not bright_vessels(hu, labelled, SPACING, 40.0).mask.any()
    hu, labelled, *_ = _gland_vein_and_spot()
    tiny = np.zeros_like(labelled)
    tiny[8, 20, 20:30] = True
    result = bright_vessels(hu, tiny, SPACING, 40.0)
    assert not result.mask.any() and result.gland_median_hu is None


def test_the_margin_must_be_positive():
    assert check_margin(40) == 40.0
    for bad in (0.0, -10.0, float("nan")):
        with pytest.raises(ValueError, match="positive number of HU"):
            check_margin(bad)
    # a run's override is checked too, not taken for "as registered"
    from PancreasAILib.cascade.settings import CascadeSettings
    from PancreasAILib.cascade.spec import STAGE1, STAGE2

    assert CascadeSettings().resolve(STAGE1, STAGE2).vessel_margin_hu == STAGE2.vessel_margin_hu
    with pytest.raises(ValueError, match="positive number of HU"):
        CascadeSettings(vessel_margin_hu=0.0).resolve(STAGE1, STAGE2)


def test_the_pancreas_probability_of_vessel_voxels_goes_to_background_and_tumour_is_untouched():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet((1.0, 1.0, 1.0), size=(4, 5, 6)).transpose(3, 0, 1, 2).astype(np.float32)
    vessel = np.zeros((4, 5, 6), bool)
    vessel[1:3, 2:4, 1:5] = True
    before = probs.copy()
    move_to_background(probs, vessel)
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    assert (probs[1][vessel] == 0).all() and np.array_equal(probs[2], before[2])
    assert np.array_equal(probs[:, ~vessel], before[:, ~vessel])


def test_on_a_synthesised_case_the_portal_vein_is_taken_out_of_a_gland_grown_into_it():
    """Realistic intensities and anatomy: the generator's gland grown by 4 mm swallows part of the
    portal/splenic vein and the fat; the step takes back most of that vein and none of the gland."""
    config = SynthesisConfig.coarse(p_tumour=0.0, keep_organ_labels=True)
    case = synthesize_case(procedural_anatomy(5), config, seed=5)
    organs = sitk.GetArrayFromImage(case.organs)
    venous = sitk.GetArrayFromImage(case.phases[Phase.VENOUS]).astype(np.float32)
    spacing = np.asarray(case.organs.GetSpacing())[::-1]
    gland = np.isin(organs, [Organ.PANCREAS, Organ.PANCREATIC_DUCT])
    grown = ndi.distance_transform_edt(~gland, sampling=spacing) <= 4.0
    swallowed = grown & (organs == Organ.PORTAL_SPLENIC_VEIN)
    assert swallowed.sum() > 20  # the procedural vein runs along the gland
    taken = bright_vessels(venous, grown, spacing, 40.0).mask
    assert taken[swallowed].mean() > 0.75
    assert taken[gland].mean() < 0.02
