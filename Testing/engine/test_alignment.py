"""Alignment: a synthetic case with a known rigid misalignment is recovered to 1 mm and 0.5°."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from PancreasAILib.phases import LoadedSeries, Phase, PhaseSet, SeriesInfo
from PancreasAILib.registration import (
    CACHED_METHOD_NOTE,
    AlignmentCache,
    align_phase_set,
    transform_matrix,
)
from PancreasAILib.synthesis import SynthesisConfig, procedural_anatomy, synthesize_case


@pytest.fixture(scope="module")
def synthetic_case():
    config = SynthesisConfig.coarse(
        spacing_mm=1.5,
        slice_thickness_mm=2.5,
        misalign_max_mm=0.0,
        misalign_max_deg=0.0,
        z_margin_mm=(50.0, 60.0),
    )
    return synthesize_case(procedural_anatomy(11), config, seed=11)


def _series(image: sitk.Image, name: str) -> LoadedSeries:
    return LoadedSeries(sitk.Cast(image, sitk.sitkFloat32), SeriesInfo(source=Path(name), kind="file"))


@pytest.mark.parametrize(
    ("shift_mm", "angles_deg"), [((7.0, -5.0, 5.0), (3.0, -2.0, 3.0)), ((-4.0, 6.0, -3.0), (-2.5, 1.5, -2.0))]
)
def test_known_rigid_misalignment_is_recovered(synthetic_case, shift_mm, angles_deg):
    venous = synthetic_case.phases[Phase.VENOUS]
    arterial = synthetic_case.phases[Phase.ARTERIAL]
    centre = venous.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in venous.GetSize()])
    truth = sitk.Euler3DTransform()
    truth.SetCenter(centre)
    truth.SetRotation(*(math.radians(a) for a in angles_deg))
    truth.SetTranslation(shift_mm)
    assert np.linalg.norm(shift_mm) <= 10.0 and max(map(abs, angles_deg)) <= 5.0
    # The moving phase sees the anatomy displaced: moving(truth(x)) = arterial(x).
    moving = sitk.Resample(arterial, arterial, truth.GetInverse(), sitk.sitkLinear, -1024.0)
    phase_set = PhaseSet({Phase.ARTERIAL: _series(moving, "a"), Phase.VENOUS: _series(venous, "v")})
    aligned = align_phase_set(phase_set)
    (result,) = aligned.alignments
    a_true, b_true = transform_matrix(truth)
    a_est, b_est = transform_matrix(result.transform)
    body = np.argwhere(sitk.GetArrayViewFromImage(synthetic_case.labels) >= 0)[::997][:, ::-1]
    points = np.array([venous.TransformIndexToPhysicalPoint(tuple(int(v) for v in p)) for p in body])
    error_mm = np.linalg.norm(points @ a_true.T + b_true - (points @ a_est.T + b_est), axis=1).max()
    rotation_error = math.degrees(math.acos(np.clip((np.trace(a_true.T @ a_est) - 1) / 2, -1, 1)))
    assert error_mm < 1.0, error_mm
    assert rotation_error < 0.5, rotation_error
    assert result.ncc_after > result.ncc_before
    assert result.warning is None
    assert aligned.images[Phase.ARTERIAL].GetSize() == venous.GetSize()


def test_unrelated_images_give_a_poor_alignment_warning(synthetic_case):
    venous = synthetic_case.phases[Phase.VENOUS]
    noise = sitk.GetImageFromArray(
        np.random.default_rng(0).normal(0, 300, venous.GetSize()[::-1]).astype("f4")
    )
    noise.CopyInformation(venous)
    phase_set = PhaseSet({Phase.DELAYED: _series(noise, "d"), Phase.VENOUS: _series(venous, "v")})
    (result,) = align_phase_set(phase_set).alignments
    assert result.warning is not None and "check" in result.warning


def test_the_alignment_cache_reuses_only_the_very_same_registration(synthetic_case, tmp_path):
    venous = synthetic_case.phases[Phase.VENOUS]
    shifted = sitk.Euler3DTransform()
    shifted.SetTranslation((4.0, -3.0, 2.0))
    moving = sitk.Resample(synthetic_case.phases[Phase.DELAYED], venous, shifted, sitk.sitkLinear, -1024.0)

    def phase_set(delayed: sitk.Image) -> PhaseSet:
        return PhaseSet({Phase.DELAYED: _series(delayed, "d"), Phase.VENOUS: _series(venous, "v")})

    cache = AlignmentCache(tmp_path / "alignments")
    computed = align_phase_set(phase_set(moving), cache=cache)
    assert len(list(cache.folder.glob("*.json"))) == 1
    reused = align_phase_set(phase_set(moving), cache=cache)
    (first,), (second,) = computed.alignments, reused.alignments
    assert second.method == first.method + CACHED_METHOD_NOTE and second.ncc_after == first.ncc_after
    difference = sitk.GetArrayViewFromImage(computed.images[Phase.DELAYED]) - sitk.GetArrayViewFromImage(
        reused.images[Phase.DELAYED]
    )
    assert np.abs(difference).max() < 1e-2  # the same transform, as a matrix: identical resampling
    # One changed voxel is another image: registered afresh, a second entry
    array = sitk.GetArrayFromImage(moving)
    array[0, 0, 0] += 1.0
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(moving)
    (fresh,) = align_phase_set(phase_set(edited), cache=cache).alignments
    assert not fresh.method.endswith(CACHED_METHOD_NOTE)
    assert len(list(cache.folder.glob("*.json"))) == 2
    (other_seed,) = align_phase_set(phase_set(moving), cache=cache, seed=1).alignments
    assert not other_seed.method.endswith(CACHED_METHOD_NOTE)
