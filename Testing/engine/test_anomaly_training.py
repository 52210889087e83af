"""Anomaly training data and trainer: phase dropout, image-level labels, checkpoints and resume, CLIs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from PancreasAILib.anomaly.preprocess import PreprocessSpec
from PancreasAILib.errors import InputError
from PancreasAILib.models.ddpm import DDPMConfig
from PancreasAILib.models.noise_classifier import NoiseClassifierConfig
from PancreasAILib.training.anomaly_data import (
    CacheSpec,
    SliceBank,
    list_cases,
    load_cached_case,
    make_cached_case,
    random_phase_mask,
)
from PancreasAILib.training.anomaly_trainer import TrainConfig, train_anomaly_model


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_fake_cases(folder: Path, n: int = 2) -> list[Path]:
    """Cached-case files like the synthesis cache writes, from a simple phantom."""
    from test_anomaly_heatmap import phantom_roi

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        roi, labels, _ = phantom_roi(seed=i)
        meta = {"index": i, "anatomy": "phantom", "spacing_xyz": [1.5, 1.5, 3.0], "domain_randomise": False}
        np.savez_compressed(
            folder / f"case_{i:04d}.npz", roi_hu=roi.astype(np.int16), labels=labels, meta=json.dumps(meta)
        )
    return list_cases(folder)


def test_phase_dropout_masks():
    masks = random_phase_mask(np.random.default_rng(0), 4000, p_all=0.4)
    assert masks.any(axis=1).all()  # never empty
    assert 0.35 < masks.all(axis=1).mean() < 0.45
    venous_only = (masks == np.array([False, True, False])).all(axis=1).mean()
    assert venous_only > 0.05


def test_slice_bank_gives_image_level_labels(tmp_path):
    bank = SliceBank(write_fake_cases(tmp_path / "cache"), PreprocessSpec())
    assert len(bank) > 0 and 0 < bank.positive_fraction < 1
    rng = np.random.default_rng(0)
    crop, region, tumour_px = bank.crop(rng, 64)
    assert crop.shape == (3, 64, 64) and crop.dtype == np.float32 and tumour_px >= 0
    assert region.shape == (64, 64) and region[32, 32] == 1  # crops are centred on a region pixel
    crops, regions, labels = bank.labelled_batch(rng, 8, 64)
    assert crops.shape == (8, 3, 64, 64) and labels.tolist() == [1, 0] * 4
    assert regions.shape == (8, 1, 64, 64) and set(np.unique(regions)) <= {0.0, 1.0}
    assert bank.healthy_batch(rng, 4, 64).shape == (4, 3, 64, 64)


@pytest.mark.parametrize("which", ["ddpm", "classifier", "classifier-region"])
def test_trainer_checkpoints_and_resumes(tmp_path, which):
    bank = SliceBank(write_fake_cases(tmp_path / "cache"), PreprocessSpec())
    region_input = which == "classifier-region"
    which = which.removesuffix("-region")
    cfg = TrainConfig(
        model=which,
        out_dir=tmp_path / "run",
        iterations=3,
        batch=4,
        log_every=1,
        ddpm=DDPMConfig(base=8, mults=(1, 2), emb=16),
        classifier=NoiseClassifierConfig(base=8, mults=(1, 2), emb=16, region_input=region_input),
    )
    first = train_anomaly_model(cfg, bank, log=lambda m: None)
    assert first.iterations == 3 and np.isfinite(first.final_loss)
    assert (tmp_path / "run" / f"{which}_checkpoint.pt").is_file()
    messages: list[str] = []
    cfg.iterations = 5
    second = train_anomaly_model(cfg, bank, log=messages.append)
    assert second.iterations == 5 and any("resumed at iteration 3" in m for m in messages)
    state = load_file(str(second.weights))
    assert state and all(torch.isfinite(v).all() for v in state.values())
    record = json.loads((tmp_path / "run" / f"anomaly_{which}.json").read_text())
    assert record["iterations_done"] == 5 and record["seed"] == 0


def test_a_run_can_start_from_the_registered_weights(tmp_path, monkeypatch):
    """--init-from-shipped: the registered widths and weights start the run; a checkpoint wins over them."""
    import dataclasses

    from test_anomaly_heatmap import make_registry

    from PancreasAILib.cli.train_anomaly import _start_from_registered
    from PancreasAILib.models.registry import read_manifest

    root = make_registry(tmp_path)
    monkeypatch.setenv("PANCREASAI_MODELS", str(root))
    bank = SliceBank(write_fake_cases(tmp_path / "cache"), PreprocessSpec())
    cfg = TrainConfig(model="ddpm", out_dir=tmp_path / "run", iterations=0, batch=4)
    assert cfg.ddpm == DDPMConfig()  # the default widths, not the registered tiny network's
    state, cfg = _start_from_registered(cfg)
    assert cfg.ddpm == DDPMConfig.from_dict(read_manifest(root)["anomaly_ddpm"].config) != DDPMConfig()
    messages: list[str] = []
    result = train_anomaly_model(cfg, bank, log=messages.append, init_state=state)
    saved = load_file(str(result.weights))
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    assert any("starting from the given weights" in m for m in messages)
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    resumed = train_anomaly_model(
        dataclasses.replace(cfg, iterations=1), bank, log=messages.append, init_state=zeros
    )
    moved = load_file(str(resumed.weights))
    assert any("resumed at iteration 0" in m for m in messages)
    assert all(torch.allclose(moved[k].float(), state[k].float(), atol=0.05) for k in state)
    assert not all(torch.equal(moved[k], state[k]) for k in state)


def test_cli_arguments_parse():
    from PancreasAILib.cli import evaluate_heatmap, train_anomaly

    parser = argparse.ArgumentParser()
    train_anomaly.add_arguments(parser)
    args = parser.parse_args(
        ["--model", "ddpm", "--ddpm-base", "48", "--ddpm-mults", "1,2,4", "--minutes", "1"]
    )
    assert args.ddpm_base == 48 and args.ddpm_mults == (1, 2, 4) and args.model == "ddpm"
    assert not args.init_from_shipped and args.calibration_smooth_z == [0.0, 3.0, 4.5, 6.0]
    args = parser.parse_args(["--init-from-shipped", "--calibration-smooth-z", "0", "3"])
    assert args.init_from_shipped and args.calibration_smooth_z == [0.0, 3.0]
    parser = argparse.ArgumentParser()
    evaluate_heatmap.add_arguments(parser)
    args = parser.parse_args(
        ["--setting", "250:8:10:v", "--setting", "150:0:5", "--setting", "150:10:10:avd:ddim:0"]
    )
    assert [s.phases for s in args.setting] == ["v", "avd", "avd"] and args.setting[1].guidance == 0.0
    assert [s.smooth_z_mm for s in args.setting] == [None, None, 0.0]  # None: the calibrated one
    assert evaluate_heatmap.parse_part("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x"):  # K counts from 1: "0/2" used to run the last row only
        with pytest.raises(InputError, match="--part"):
            evaluate_heatmap.parse_part(bad)


@pytest.mark.shared
def test_cached_case_from_training_anatomy(shared_data, tmp_path):
    spec = CacheSpec(str(shared_data / "anatomy"), "train", 1, seed=5)
    case = load_cached_case(make_cached_case(spec, 0, tmp_path))
    assert case.roi_hu.shape[0] == 3 and case.roi_hu.shape[1:] == case.labels.shape
    assert (case.labels == 1).any()
    assert case.meta["split"] == "train" and case.meta["anatomy"].startswith("btcv_l2r/00")
    assert int(case.meta["anatomy"][-4:]) not in range(25, 31)  # never a held-out map


def test_evaluation_reports_each_case_and_size_classes(tmp_path):
    from test_anomaly_heatmap import make_registry

    from PancreasAILib.anomaly.evaluation import Setting, by_size_class, evaluate_setting, format_size_table
    from PancreasAILib.anomaly.heatmap import AnomalyModel

    cases = [load_cached_case(p) for p in write_fake_cases(tmp_path / "cache", n=2)]
    model = AnomalyModel.load(root=make_registry(tmp_path))
    row = evaluate_setting(model, cases, Setting(50, 1.0, 2), threshold=0.5)
    # the phantom tumour's volume from its voxels (1.5 x 1.5 x 3 mm), not a stored figure
    expected_ml = [float((c.labels == 2).sum()) * 6.75 / 1000 for c in cases]
    assert [c["tumour_ml"] for c in row.per_case] == pytest.approx(expected_ml, abs=0.01)
    assert all(0.0 <= c["auroc"] <= 1.0 and c["anatomy"] == "phantom" for c in row.per_case)
    assert row.auroc_mean == pytest.approx(np.mean([c["auroc"] for c in row.per_case]), abs=1e-3)
    groups = by_size_class(row)
    assert (
        sum(g["cases"] for g in groups) == 2 and groups[0]["size"] == "0-4 mL"
    )  # the phantom tumour is about 1.4 mL
    assert "| 0-4 mL | 2 |" in format_size_table(row)


def test_size_classes_follow_the_panorama_quartiles():
    from PancreasAILib.anomaly.evaluation import size_class

    assert [size_class(v) for v in (1.1, 4.0, 6.69, 15.4, 67.7)] == [
        "0-4 mL",
        "4-6.7 mL",
        "4-6.7 mL",
        ">= 15.4 mL",
        ">= 15.4 mL",
    ]


@pytest.mark.parametrize(("operating_level", "smooth_z"), [(150, 4.5), (250, 0.0)])
def test_default_table_starts_at_the_operating_point_and_varies_one_thing_at_a_time(
    operating_level, smooth_z
):
    from PancreasAILib.anomaly.evaluation import Setting, default_grid

    rows = default_grid(
        {"noise_level": operating_level, "guidance": 10.0, "steps": 10, "smooth_z_mm": smooth_z}
    )
    assert rows[0] == Setting(operating_level, 10.0, 10)
    # with smoothing across slices calibrated, the table shows what it adds
    assert (rows[1] == Setting(operating_level, 10.0, 10, smooth_z_mm=0.0)) == (smooth_z > 0)
    assert len(rows) == len(set(rows))
    assert {r.noise_level for r in rows} == {150, 250, 350}
    assert Setting(operating_level, 0.0, 10) in rows and Setting(operating_level, 8.0, 10) in rows
    assert Setting(operating_level, 10.0, 5) in rows
    assert {r.phases for r in rows} == {"avd", "v", "av"}
    for row in rows[1:]:  # each row differs from the operating point in exactly one setting
        changed = [
            row.noise_level != operating_level,
            row.guidance != 10.0,
            row.steps != 10,
            row.phases != "avd",
            row.smooth_z_mm is not None,
        ]
        assert sum(changed) == 1


def test_anomaly_cache_refuses_cases_of_another_generator(tmp_path):
    from PancreasAILib.training.anomaly_data import build_cache

    spec = CacheSpec("anatomy", "heldout", 0, seed=1)
    recorded = json.loads(json.dumps(spec.__dict__, default=list))
    del recorded["generator_version"]  # a cache made before the version was recorded
    (tmp_path / "spec.json").write_text(json.dumps(recorded))
    with pytest.raises(InputError, match="generator version 1"):
        build_cache(spec, tmp_path)
    (tmp_path / "spec.json").unlink()
    build_cache(spec, tmp_path)
    build_cache(spec, tmp_path)  # the same generator and settings: resumed
    assert json.loads((tmp_path / "spec.json").read_text())["generator_version"] == spec.generator_version
