"""Growing stage 1's gland into its weak, connected part before the stage-2 box is taken."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasAILib.cascade.runner import Cascade, grow_component
from PancreasAILib.cascade.settings import CascadeSettings, check_grow_threshold
from PancreasAILib.cascade.spec import StageSpec
from PancreasAILib.phases import Phase


def test_growing_takes_the_weak_part_that_touches_the_core_and_nothing_else():
    probability = np.zeros((8, 20, 40), np.float32)
    probability[2:6, 5:15, 2:12] = 0.9  # the confident core
    probability[3:5, 8:12, 12:30] = 0.3  # a weak tail continuing it
    probability[3:5, 8:12, 34:38] = 0.3  # a weak blob apart from it
    probability[0, 0, 0] = 0.1  # below the threshold, though nothing else is near
    core = probability >= 0.5
    grown = grow_component(core, probability, 0.15)
    assert (grown >= core).all()  # only ever adds
    assert grown[3:5, 8:12, 12:30].all()
    assert not grown[..., 34:].any() and not grown[0, 0, 0]
    assert (grow_component(core, probability, 0.5) == core).all()


def test_a_growing_threshold_must_be_a_probability_up_to_one_half():
    assert check_grow_threshold(0.15) == 0.15
    for bad in (0.0, -0.1, 0.6):
        with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
            check_grow_threshold(bad)
    from PancreasAILib.cli.model_options import grow_threshold_arg

    with pytest.raises(argparse.ArgumentTypeError):
        grow_threshold_arg("0.7")
    spec = StageSpec((4.0, 4.0, 6.0), (32, 64, 64), grow_threshold=0.15)
    assert StageSpec.from_dict(spec.to_dict()) == spec
    assert StageSpec.from_dict({"spacing": [4, 4, 6], "patch": [32, 64, 64]}).grow_threshold is None


class SureAndUnsure(torch.nn.Module):
    """A stage 1 sure of very bright venous tissue (p ~ 1) and unsure of moderately bright (p 0.3)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        venous = x[:, 1] * 150.0 + 50.0  # back to HU (normalise_hu: (HU - 50) / 150)
        logit = torch.where(venous > 200.0, 10.0, torch.where(venous > 100.0, -0.85, -10.0))
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def _scan_with_a_weak_tail() -> tuple[sitk.Image, tuple[float, ...], tuple[float, ...]]:
    z, y, x = np.mgrid[:40, :120, :240].astype(np.float32)
    hu = np.full(z.shape, -100.0, np.float32)
    hu[((x - 60) / 20) ** 2 + ((y - 60) / 14) ** 2 + ((z - 20) / 8) ** 2 <= 1.0] = 250.0  # the core
    tail = (x > 78) & (x < 170) & (np.abs(y - 60) <= 5) & (np.abs(z - 20) <= 4)
    hu[tail] = 150.0
    hu[(np.abs(x - 215) <= 6) & (np.abs(y - 100) <= 6) & (np.abs(z - 20) <= 4)] = 150.0  # apart
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((1.5, 1.5, 2.5))
    image.SetOrigin((-180.0, -90.0, 200.0))
    tail_end = image.TransformContinuousIndexToPhysicalPoint((165.0, 60.0, 20.0))
    apart = image.TransformContinuousIndexToPhysicalPoint((215.0, 100.0, 20.0))
    return image, tail_end, apart


def _inside(grid: sitk.Image, point) -> bool:
    index = np.asarray(grid.TransformPhysicalPointToContinuousIndex(point))
    return bool(((index >= 0) & (index <= np.asarray(grid.GetSize()) - 1)).all())


def test_the_tumour_network_box_reaches_the_weak_tail_only_when_grown(tmp_path, monkeypatch):
    from model_fixtures import make_tiny_models

    monkeypatch.setenv("PANCREASAI_MODELS", str(make_tiny_models(tmp_path / "models")))
    scan, tail_end, apart = _scan_with_a_weak_tail()
    boxes = {}
    for grow in (0.5, 0.15):
        cascade = Cascade.load(
            "cpu", stage1=SureAndUnsure(), settings=CascadeSettings(mirror=False, stage1_grow_threshold=grow)
        )
        result = cascade.run({Phase.VENOUS: scan}, scan)
        assert result.pancreas_found
        boxes[grow] = result.roi_grid
    assert not _inside(boxes[0.5], tail_end)
    assert _inside(boxes[0.15], tail_end)
    assert not _inside(boxes[0.15], apart)  # weak tissue apart from the gland stays out


def grown_at(settings: CascadeSettings, stage1=None) -> float | None:
    return Cascade.load("cpu", stage1=stage1, settings=settings).settings.stage1_grow_threshold


def test_the_registered_threshold_is_used_unless_a_run_overrides_it(tmp_path, monkeypatch):
    from model_fixtures import make_tiny_models

    from PancreasAILib.models.registry import read_manifest, write_manifest

    root = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    assert Cascade.load("cpu").settings.stage1_grow_threshold is None  # none registered: not grown
    entries = read_manifest(root)
    entries["stage1_pancreas"].input_spec["grow_threshold"] = 0.2
    write_manifest(entries, root)
    assert Cascade.load("cpu").settings.stage1_grow_threshold == 0.2
    assert grown_at(CascadeSettings(stage1_grow_threshold=0.5)) is None  # 0.5: off
    assert grown_at(CascadeSettings(stage1_grow_threshold=0.3)) == 0.3


def test_an_external_stage1_is_grown_only_when_a_run_asks(tmp_path, monkeypatch):
    from model_fixtures import make_tiny_models

    from PancreasAILib.models.registry import read_manifest, write_manifest

    root = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    entries = read_manifest(root)
    entries["stage1_pancreas"].input_spec["grow_threshold"] = 0.2
    write_manifest(entries, root)
    assert grown_at(CascadeSettings(), SureAndUnsure()) is None
    assert grown_at(CascadeSettings(stage1_grow_threshold=0.3), SureAndUnsure()) == 0.3
