"""Stage 1's test-time magnification: the magnified runs must land back where the gland is."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasAILib.cascade.grids import grid_for_box, image_box
from PancreasAILib.cascade.runner import Cascade
from PancreasAILib.cascade.settings import CascadeSettings, RunSettings
from PancreasAILib.cascade.spec import STAGE1, STAGE2, StageSpec
from PancreasAILib.phases import Phase


class BrightTissue(torch.nn.Module):
    """A stage 1 that calls every voxel brighter than 125 HU in the venous phase pancreas.

    It does not care about size, so each magnification must give the same gland back on the
    scan's grid: any shift, flip or scaling error in the round trip shows."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        venous = x[:, 1]  # normalised HU: (125 - 50) / 150 = 0.5
        return torch.stack([torch.zeros_like(venous), 20.0 * (venous - 0.5)], dim=1)


def _scan() -> sitk.Image:
    # 1.5 x 1.5 x 2.5 mm, a bright ellipsoid off the centre of the scan, LPS with an origin not at 0
    z, y, x = np.mgrid[:60, :160, :200].astype(np.float32)
    blob = ((x - 130) / 30) ** 2 + ((y - 60) / 18) ** 2 + ((z - 22) / 9) ** 2 <= 1.0
    image = sitk.GetImageFromArray(np.where(blob, 200.0, -100.0).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 2.5))
    image.SetOrigin((-140.0, -80.0, 300.0))
    return image


def _cascade(scales: tuple[float, ...]) -> Cascade:
    settings = RunSettings(stage1_scales=scales)
    return Cascade(BrightTissue(), None, STAGE1, STAGE2, [], torch.device("cpu"), settings=settings)


def test_magnified_stage1_runs_come_back_onto_the_gland():
    scan = _scan()
    images = {Phase.VENOUS: scan}
    grid = grid_for_box(image_box(scan), STAGE1.spacing)
    present = np.array([False, True, False])
    plain = _cascade((1.0,)).stage1_probability(images, grid, present) >= 0.5
    assert plain.sum() > 50
    for scales in ((1.4,), (1.0, 1.25, 1.4)):
        found = _cascade(scales).stage1_probability(images, grid, present) >= 0.5
        dice = 2 * (found & plain).sum() / (found.sum() + plain.sum())
        assert dice > 0.9, (scales, dice)
        shift = np.abs(np.argwhere(found).mean(axis=0) - np.argwhere(plain).mean(axis=0))
        assert (shift < 0.5).all(), (scales, shift)  # under half a stage-1 voxel on every axis


def test_the_scales_travel_with_the_stage_specification():
    spec = StageSpec((4.0, 4.0, 6.0), (32, 64, 64), test_time_scales=(1.0, 1.2))
    assert StageSpec.from_dict(spec.to_dict()) == spec
    older = {"spacing": [4, 4, 6], "patch": [32, 64, 64]}  # manifests written before the field
    assert StageSpec.from_dict(older).test_time_scales == (1.0,)


def test_a_scale_that_is_not_a_magnification_is_refused(tmp_path, monkeypatch):
    from model_fixtures import make_tiny_models

    monkeypatch.setenv("PANCREASAI_MODELS", str(make_tiny_models(tmp_path / "models")))
    assert Cascade.load("cpu", settings=CascadeSettings(stage1_scales=(1.0, 1.3))).settings.stage1_scales == (
        1.0,
        1.3,
    )
    with pytest.raises(ValueError, match="positive magnifications"):
        Cascade.load("cpu", settings=CascadeSettings(stage1_scales=(1.0, 0.0)))
