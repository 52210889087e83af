"""Preprocessing, patch sampling, the training loop (checkpoint, resume, register), DDP and corrections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cascade_fixtures import make_small_case
from model_fixtures import TINY, make_tiny_models
from safetensors.torch import load_file

from PancreasAILib.cli.main import main
from PancreasAILib.corrections import write_correction_record
from PancreasAILib.errors import InputError
from PancreasAILib.models.registry import get_entry, set_calibration
from PancreasAILib.training.augment import (
    SpatialDraw,
    degrade_prior,
    drop_phases,
    spatial_patch,
    take_patch,
    validation_prior,
)
from PancreasAILib.training.datasets import PatchSampler, load_cache
from PancreasAILib.training.preprocess import preprocess_case, save_case
from PancreasAILib.training.trainer import TrainConfig, Trainer, default_spec

CHANNELS = [str(c) for c in TINY]


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    return make_small_case(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="module")
def cache(small_case, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    arrays = preprocess_case(small_case.images, small_case.labels)
    for k in range(2):
        save_case(
            folder / f"case{k}.npz", arrays, {"source": "synthetic", "anatomy": "procedural", "seed": k}
        )
    return folder


def test_preprocessed_box_holds_the_whole_gland_and_tumour(small_case, cache):
    (case, _) = load_cache(cache)
    truth = sitk.GetArrayFromImage(small_case.labels)
    voxel_ml_truth = np.prod(small_case.labels.GetSpacing()) / 1000
    assert case["s2_image"].shape[0] == 3 and case["s2_image"].shape[1:] == case["s2_label"].shape
    assert case["s2_label"].shape == case["s2_prior"].shape
    tumour_ml = (case["s2_label"] == 2).sum() * 2.0 * 2.0 * 3.0 / 1000
    assert tumour_ml == pytest.approx((truth == 2).sum() * voxel_ml_truth, rel=0.35)
    assert case["has_tumour"] and case["phase_mask"].all()
    # the gland sits inside the box, away from its faces
    gland = np.argwhere(case["s2_label"] > 0)
    assert gland.min(axis=0).min() > 0 and np.all(gland.max(axis=0) < np.array(case["s2_label"].shape) - 1)


def test_sampler_oversamples_tumour_and_drops_phases(cache):
    sampler = PatchSampler(load_cache(cache), stage=2, patch=(16, 32, 32), seed=0, tumour_fraction=1.0)
    batch = sampler.batch(8)
    assert batch["image"].shape == (8, 3, 16, 32, 32) and batch["prior"].shape == (8, 1, 16, 32, 32)
    assert int(batch["pdac"].sum()) >= 6  # centred on tumour voxels (jitter may cut a few short)
    masks = np.stack([sampler.sample()["mask"] for _ in range(60)])
    assert masks.any(axis=1).all() and (~masks.all(axis=1)).sum() > 10  # subsets, never empty
    dropped = batch["image"].numpy()[~batch["mask"].numpy()]
    assert np.all(dropped == 0)


def test_the_healthy_share_sets_how_many_patches_come_from_tumour_free_cases(cache):
    with_tumour = load_cache(cache)[0]
    healthy = {key: value.copy() for key, value in with_tumour.items()}
    healthy["s2_label"][healthy["s2_label"] == 2] = 1  # the same gland without its tumour
    cases = [with_tumour, with_tumour, with_tumour, healthy]

    def share_without_tumour(healthy_share):
        sampler = PatchSampler(
            cases,
            stage=2,
            patch=(8, 16, 16),
            seed=3,
            tumour_fraction=1.0,
            spatial=0.0,
            healthy_share=healthy_share,
        )
        return np.mean([(sampler.sample()["label"] == 2).sum() == 0 for _ in range(200)])

    assert share_without_tumour(None) < 0.35  # one case in four, as they come
    assert 0.6 < share_without_tumour(0.75) < 0.9


def test_phase_dropout_shares_follow_the_configuration():
    rng = np.random.default_rng(0)
    present = np.ones(3, bool)
    venous = np.array([False, True, False])

    def shares(p_all: float, p_venous: float) -> tuple[float, float]:
        draws = np.stack([drop_phases(present, rng, p_all, p_venous) for _ in range(3000)])
        return float(draws.all(axis=1).mean()), float((draws == venous).all(axis=1).mean())

    all_default, venous_default = shares(0.4, 0.0)
    assert abs(all_default - 0.4) < 0.04 and abs(venous_default - 0.6 / 6) < 0.03
    all_heavy, venous_heavy = shares(0.3, 0.3)
    assert abs(all_heavy - 0.3) < 0.04 and abs(venous_heavy - (0.3 + 0.4 / 6)) < 0.04
    # A case without a venous phase never gets an empty or venous-only mask.
    art_del = np.array([True, False, True])
    draws = np.stack([drop_phases(art_del, rng, 0.0, 1.0) for _ in range(200)])
    assert draws.any(axis=1).all() and not draws[:, 1].any()


def _sphere(shape=(40, 80, 80), radius=9.0):
    zz, yy, xx = np.indices(shape)
    centre = np.array(shape) / 2.0
    label = ((zz - centre[0]) ** 2 + (yy - centre[1] - 5) ** 2 + (xx - centre[2]) ** 2 <= radius**2).astype(
        np.uint8
    )
    image = np.where(label > 0, 200, -100).astype(np.int16)
    return image, label


def test_identity_spatial_draw_is_a_plain_crop():
    image, _ = _sphere()
    start, patch = np.array([4, 10, 12]), (24, 48, 48)
    centre = start + (np.array(patch) - 1) / 2.0
    same = spatial_patch(image, centre, patch, SpatialDraw(np.eye(3)), -1024, 1)
    np.testing.assert_array_equal(same, take_patch(image, start, patch, -1024))


def test_rotation_and_scaling_keep_image_and_label_aligned():
    image, label = _sphere()
    rng = np.random.default_rng(3)
    centre, patch = (np.array(label.shape) - 1) / 2.0, (40, 80, 80)
    volumes = []
    for _ in range(6):
        draw = SpatialDraw.draw(rng)
        img = spatial_patch(image[None], centre, patch, draw, -1024, 1)[0]
        lab = spatial_patch(label, centre, patch, draw, 0, 0)
        assert np.mean((img > 50) == (lab > 0)) > 0.995
        # a zoom of s per axis shrinks the sphere's voxel count by the determinant
        volumes.append(lab.sum() * abs(np.linalg.det(draw.matrix)) / label.sum())
    assert np.allclose(volumes, 1.0, atol=0.12)
    assert len({round(v, 3) for v in volumes}) > 1  # the draws differ


def test_elastic_deformation_bends_the_patch_and_keeps_image_and_label_aligned():
    image, label = _sphere(radius=14.0)
    rng = np.random.default_rng(4)
    centre, patch = (np.array(label.shape) - 1) / 2.0, (40, 80, 80)
    for _ in range(4):
        draw = SpatialDraw.draw(rng, elastic_voxels=3.0, patch=patch)
        offsets = np.abs(draw.displacement).reshape(3, -1).max(axis=1)
        assert offsets[1:].max() <= 3.0 + 1e-5 and offsets[0] <= 1.5 + 1e-5
        img = spatial_patch(image[None], centre, patch, draw, -1024, 1)[0]
        lab = spatial_patch(label, centre, patch, draw, 0, 0)
        assert np.mean((img > 50) == (lab > 0)) > 0.995
        affine = spatial_patch(label, centre, patch, SpatialDraw(draw.matrix), 0, 0)
        changed = np.mean(lab != affine) / max(np.mean(affine > 0), 1e-6)
        assert 0.01 < changed < 0.6  # the sphere's surface moved, its bulk did not vanish
    assert SpatialDraw.draw(rng, elastic_voxels=0.0, patch=patch).displacement is None


def test_a_wider_zoom_range_shows_the_gland_smaller(cache):
    """--scale MAX above 1 shows small patients: the same gland covers fewer voxels of the patch."""

    def gland_voxels(scale):
        sampler = PatchSampler(
            load_cache(cache), stage=1, patch=(16, 48, 48), seed=2, spatial=1.0, scale=scale
        )
        return np.mean([(sampler.sample()["label"] > 0).sum() for _ in range(30)])

    assert gland_voxels((1.5, 1.6)) < 0.6 * gland_voxels((0.75, 0.8))


def test_train_command_rejects_a_zoom_range_upside_down(cache, tmp_path, capsys):
    from PancreasAILib.errors import ExitCode

    run = tmp_path / "run"
    rc = main([*stage2_command(cache, run), "--scale", "1.5", "0.8"])
    assert rc == ExitCode.BAD_INPUT and "--scale" in capsys.readouterr().err
    assert not run.exists()
    rc = main([*stage2_command(cache, run), "--healthy-share", "1.5"])
    assert rc == ExitCode.BAD_INPUT and "--healthy-share 1.5 is not a share" in capsys.readouterr().err
    assert not run.exists()


def test_sampler_with_spatial_augmentation_keeps_prior_and_tumour_together(cache):
    sampler = PatchSampler(
        load_cache(cache), stage=2, patch=(16, 32, 32), seed=1, tumour_fraction=1.0, spatial=1.0
    )
    batch = sampler.batch(6)
    label, prior = batch["label"].numpy(), batch["prior"].numpy()[:, 0]
    assert label.shape == prior.shape == (6, 16, 32, 32)
    assert (label == 2).sum() > 0
    # the true gland prior follows the gland through the same transform
    assert prior[label > 0].mean() > prior[label == 0].mean() + 0.2


def test_degraded_priors_grow_shrink_cut_and_vanish():
    """Stage 2 must not learn to copy the prior: training shows it too large, too small, cut or absent."""
    prior = np.zeros((12, 48, 48), np.float32)
    prior[3:9, 14:34, 10:38] = 1.0
    rng = np.random.default_rng(0)
    out = [degrade_prior(prior, rng) for _ in range(300)]
    assert all(o.shape == prior.shape and o.dtype == np.float32 and 0 <= o.min() <= o.max() <= 1 for o in out)
    support = np.array([(o > 0.5).sum() / prior.sum() for o in out])
    absent = np.array([o.max() == 0 for o in out])
    assert 0.12 < absent.mean() < 0.3
    assert (support[~absent] > 1.3).mean() > 0.15  # grown by several mm
    assert (support[~absent] < 0.6).mean() > 0.05  # shrunk or cut
    grown = validation_prior(prior)
    assert grown.max() == pytest.approx(1.0) and (grown > 0.5).sum() > 1.2 * prior.sum()
    assert (grown[prior > 0] > 0.8).all()  # the validation prior still covers the whole gland


def test_training_checkpoints_and_resumes(cache, tmp_path):
    cases = load_cache(cache)
    config = TrainConfig(
        stage=1,
        run_dir=tmp_path / "run",
        steps=4,
        checkpoint_every=2,
        val_every=4,
        channels=TINY,
        spec=default_spec(1),
    )
    Trainer(config, cases, cases[:1]).fit()
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (
        tmp_path / "run" / "best.safetensors"
    ).is_file()
    config.steps = 6
    resumed = Trainer(config, cases, cases[:1])
    assert resumed.resume() and resumed.step == 4
    resumed.fit()
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 6


def stage2_command(cache, run) -> list[str]:
    """`pancreasai train stage2` on the cached test cases, without validation cases or progress bars."""
    return [
        "train",
        "stage2",
        "--cache",
        str(cache),
        "--val-cases",
        "0",
        "--run",
        str(run),
        "--progress",
        "none",
    ]


def test_train_command_rejects_phase_shares_that_do_not_add_up(cache, tmp_path, capsys):
    from PancreasAILib.errors import ExitCode

    run = tmp_path / "run"
    rc = main([*stage2_command(cache, run), "--p-all-phases", "0.8", "--p-venous-only", "0.5"])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and "--p-venous-only" in err and "fix:" in err
    assert not run.exists()  # refused before anything was written


def test_train_command_rejects_a_negative_elastic_offset(cache, tmp_path, capsys):
    from PancreasAILib.errors import ExitCode

    run = tmp_path / "run"
    rc = main([*stage2_command(cache, run), "--elastic", "-1"])
    assert rc == ExitCode.BAD_INPUT and "--elastic" in capsys.readouterr().err
    assert not run.exists()


def test_zero_steps_prepares_the_caches_and_trains_nothing(cache, tmp_path, capsys):
    from PancreasAILib.errors import ExitCode

    run = tmp_path / "run"
    assert main([*stage2_command(cache, run), "--steps", "0"]) == 0
    assert "caches ready: 2 training cases" in capsys.readouterr().out
    assert not (run / "checkpoint.pt").exists() and not (run / "best.safetensors").exists()
    assert main([*stage2_command(cache, run), "--steps", "0", "--register"]) == ExitCode.BAD_INPUT
    assert "--register" in capsys.readouterr().err


def test_train_command_records_the_intensity_recipe_it_trained_with(cache, tmp_path, capsys):
    run = tmp_path / "run"
    command = [*stage2_command(cache, run), "--steps", "1", "--channels", *CHANNELS, "--device", "cpu"]
    assert main([*command, "--intensity-augmentation", "strong"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["intensity"] == "strong"
    with pytest.raises(SystemExit):  # argparse names the choices
        main([*command, "--intensity-augmentation", "extreme"])
    assert "standard" in capsys.readouterr().err


def test_train_command_registers_loadable_weights(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tmp_path / "models"))
    rc = main(
        [
            *stage2_command(cache, tmp_path / "run"),
            "--steps",
            "2",
            "--val-every",
            "2",
            "--channels",
            *CHANNELS,
            "--device",
            "cpu",
            "--register",
        ]
    )
    assert rc == 0
    entry = get_entry("stage2_tumour")
    assert entry.card["intended_use"].startswith("Research use only")
    assert entry.card["training_data"]["cases"] == 2
    assert entry.config["channels"] == list(TINY)


def test_new_weights_keep_the_release_inference_choices(cache, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    command = [*stage2_command(cache, tmp_path / "run"), "--steps", "2", "--val-every", "2"]
    command += ["--channels", *CHANNELS, "--device", "cpu", "--register"]
    assert main([*command, "--version-tag", "1.0"]) == 0
    assert get_entry("stage2_tumour").input_spec["non_hypo_lesion_weight"] == 1.0  # nothing to keep yet
    # The release then decides its lesion weighting (through the registry, as `calibrate --register` does) ...
    set_calibration(
        "stage2_tumour", {}, input_spec={"non_hypo_lesion_weight": 0.5, "attenuation_ramp_hu": 5.0}
    )
    # ... and weights trained further replace the network, not those decisions.
    assert main([*command, "--steps", "4", "--val-every", "4", "--version-tag", "1.1"]) == 0
    entry = get_entry("stage2_tumour")
    assert entry.version == "1.1"
    assert (
        entry.input_spec["non_hypo_lesion_weight"] == 0.5 and entry.input_spec["attenuation_ramp_hu"] == 5.0
    )
    assert entry.input_spec["patch"] == list(default_spec(2).patch)  # what the network expects: its own
    assert "kept the release's inference choices" in capsys.readouterr().out


def test_weights_of_another_run_need_their_own_version(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PANCREASAI_MODELS", str(tmp_path / "models"))
    common = ["--steps", "2", "--val-every", "2", "--channels", *CHANNELS, "--device", "cpu", "--register"]
    assert main([*stage2_command(cache, tmp_path / "first"), *common]) == 0
    first = get_entry("stage2_tumour")
    # Another seed stops at the same best step: the default version (package + step) is taken
    second = [*stage2_command(cache, tmp_path / "second"), *common, "--seed", "7"]
    assert main(second) != 0
    assert "already registered with other weights" in capsys.readouterr().err
    assert get_entry("stage2_tumour").sha256 == first.sha256  # the registered weights are untouched
    assert main([*second, "--version-tag", "9.9.9"]) == 0  # resumes the finished run, registers only
    assert get_entry("stage2_tumour").version == "9.9.9" != first.version


def test_train_command_adds_an_ensemble_member_beside_the_shipped_stage1(cache, tmp_path, monkeypatch):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    shipped = get_entry("stage1_pancreas")
    command = [*stage2_command(cache, tmp_path / "run"), "--steps", "2", "--val-every", "2"]
    command[1] = "stage1"
    assert main([*command, "--init-from-shipped", "--device", "cpu", "--register", "--ensemble"]) == 0
    entry = get_entry("stage1_pancreas")
    assert entry.sha256 == shipped.sha256 and entry.version == "test+s2"
    assert len(entry.members) == 1 and entry.members[0]["card"]["intended_use"].startswith(
        "Research use only"
    )
    trained = load_file(str(tmp_path / "run" / "best.safetensors"))
    member = load_file(str(models / entry.members[0]["file"]))
    assert all(torch.equal(member[k], trained[k]) for k in trained)


def test_train_command_refuses_an_ensemble_it_would_not_register(cache, tmp_path, capsys):
    from PancreasAILib.errors import ExitCode

    run = tmp_path / "run"
    assert main([*stage2_command(cache, run), "--ensemble"]) == ExitCode.BAD_INPUT
    assert "--register" in capsys.readouterr().err and not run.exists()


def test_distributed_training_with_two_gloo_processes(cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "PancreasAILib.cli.main",
        "train",
        "stage1",
        "--cache",
        str(cache),
        "--val-cases",
        "0",
        "--run-dir",
        str(tmp_path / "ddp"),
        "--steps",
        "2",
        "--val-every",
        "2",
        "--channels",
        *CHANNELS,
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file()


def test_fine_tuning_from_a_correction_record(small_case, tmp_path, monkeypatch):
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setenv("PANCREASAI_MODELS", str(models))
    prediction = sitk.Image(small_case.labels.GetSize(), sitk.sitkUInt8)
    prediction.CopyInformation(small_case.labels)
    write_correction_record(
        tmp_path / "corrections",
        phases={p.value: img for p, img in small_case.images.items()},
        prediction=prediction,
        corrected=small_case.labels,
        model_versions={"stage2_tumour": "test"},
        input_ids={"study": "x"},
    )
    rc = main(
        [
            "train",
            "stage2",
            "--corrections",
            str(tmp_path / "corrections"),
            "--val-cases",
            "0",
            "--run",
            str(tmp_path / "ft"),
            "--steps",
            "2",
            "--val-every",
            "2",
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert rc == 0
    before = load_file(str(models / "stage2_tumour.safetensors"))
    after = load_file(str(tmp_path / "ft" / "best.safetensors"))
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in before)


def test_training_minutes_add_up_over_resumed_processes(tmp_path):
    from PancreasAILib.cli.train_register import logged_training_minutes

    log = [{"step": 10, "elapsed_s": 60.0}, {"step": 20, "elapsed_s": 120.0}, {"step": 20, "validation": {}}]
    log += [{"step": 30, "elapsed_s": 30.0}, {"step": 40, "elapsed_s": 180.0}]  # resumed at step 20
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert logged_training_minutes(tmp_path) == (120.0 + 180.0) / 60.0
    assert logged_training_minutes(tmp_path / "never-trained") == 0.0


@pytest.fixture()
def fake_synthesis(tmp_path, monkeypatch):
    """Three train-split maps (empty files) and a synthesis that only records which map each case used."""
    import PancreasAILib.training.preprocess as preprocess
    from PancreasAILib.synthesis.anatomy import anatomy_name

    anatomy = tmp_path / "anatomy" / "btcv_l2r"
    anatomy.mkdir(parents=True)
    for i in (1, 2, 3):
        (anatomy / f"{i:04d}.nii.gz").write_bytes(b"")

    def build(sources, out_dir, *, cases, seed, first_index=0, workers=2, progress=None):
        out_dir.mkdir(parents=True, exist_ok=True)
        for i in range(first_index, first_index + cases):
            if (out_dir / f"case{i}.npz").is_file():  # resumable, like the real synthesis
                continue
            meta = {"source": "synthetic", "anatomy": anatomy_name(sources[i % len(sources)]), "seed": seed}
            save_case(out_dir / f"case{i}.npz", {"x": np.zeros(1)}, meta)

    monkeypatch.setattr(preprocess, "build_synthetic_cache", build)
    return anatomy.parent


def _cache_command(anatomy, run, *extra):
    from PancreasAILib.cli.main import build_parser

    command = ["train", "stage1", "--synthetic", "6", "--val-cases", "2", "--anatomy", str(anatomy)]
    return build_parser().parse_args([*command, "--run", str(run), *extra])


def test_leave_maps_out_validation_keeps_the_held_maps_out_of_training(fake_synthesis, tmp_path):
    from PancreasAILib.cli.train_data import build_caches, describe_cache

    args = _cache_command(fake_synthesis, tmp_path / "run", "--val-maps", "btcv_l2r/0003")
    cache, val_cache = build_caches(args, None)
    assert describe_cache(cache)["anatomy_maps"] == ["btcv_l2r/0001", "btcv_l2r/0002"]
    assert describe_cache(val_cache)["anatomy_maps"] == ["btcv_l2r/0003"]


def test_leave_maps_out_validation_refuses_a_cache_that_saw_the_held_maps(fake_synthesis, tmp_path):
    from PancreasAILib.cli.train_data import build_caches

    build_caches(_cache_command(fake_synthesis, tmp_path / "old"), None)  # every map, as before
    args = _cache_command(
        fake_synthesis,
        tmp_path / "new",
        "--val-maps",
        "btcv_l2r/0003",
        "--cache",
        str(tmp_path / "old" / "cache"),
    )
    with pytest.raises(InputError, match="btcv_l2r/0003"):
        build_caches(args, None)
    with pytest.raises(InputError, match="not train-split maps"):
        build_caches(_cache_command(fake_synthesis, tmp_path / "x", "--val-maps", "btcv_l2r/0030"), None)


def test_synthetic_cache_refuses_cases_of_another_generator(tmp_path):
    """A resumed cache keeps its cases, so cases of an older generator would be mixed in silently."""
    from PancreasAILib.synthesis.case import GENERATOR_VERSION
    from PancreasAILib.training.preprocess import build_synthetic_cache, save_case

    cache = tmp_path / "cache"
    cache.mkdir()
    old_meta = {"source": "synthetic", "anatomy": "btcv_l2r/0001", "seed": 1}  # before versions were kept
    save_case(cache / "syn_00000.npz", {"x": np.zeros(1)}, old_meta)
    with pytest.raises(InputError, match=r"generator version 1.*new --cache"):
        build_synthetic_cache(["procedural"], cache, cases=1, seed=1, workers=1)
    this_generator = {**old_meta, "generator_version": GENERATOR_VERSION}
    save_case(cache / "syn_00000.npz", {"x": np.zeros(1)}, this_generator)
    with pytest.raises(InputError, match=r"still moved against their labels.*new --cache"):
        build_synthetic_cache(["procedural"], cache, cases=1, seed=1, workers=1)
    save_case(
        cache / "syn_00000.npz", {"x": np.zeros(1)}, {**this_generator, "phases_on_truth_anatomy": True}
    )
    # a case of this generator is resumed, not made again
    assert build_synthetic_cache(["procedural"], cache, cases=1, seed=1, workers=1) == [
        cache / "syn_00000.npz"
    ]


def test_validation_logs_false_tumour_in_tumour_free_glands(cache):
    from PancreasAILib.models.multiphase import MultiPhaseConfig, MultiPhaseTumourNet
    from PancreasAILib.training.trainer import validate

    with_tumour = load_cache(cache)[0]
    healthy = {key: value.copy() for key, value in with_tumour.items()}
    healthy["s2_label"][healthy["s2_label"] == 2] = 1
    torch.manual_seed(0)
    net = MultiPhaseTumourNet(MultiPhaseConfig(channels=TINY, fpn_channels=8)).eval()
    with torch.no_grad():  # a network that calls every voxel tumour
        net.seg_head.bias.copy_(torch.tensor([-30.0, -30.0, 30.0]))
    spec = default_spec(2)
    scores = validate(net, [with_tumour, healthy], 2, spec, "cpu")
    assert {"false_tumour_ml_all", "false_tumour_ml_venous", "tumour_dice_all"} <= set(scores)
    box_ml = healthy["s2_label"].size * np.prod(spec.spacing) / 1000.0
    assert scores["false_tumour_ml_all"] == pytest.approx(box_ml, rel=0.05)  # only the healthy case counts


def test_cached_phases_show_the_anatomy_their_labels_were_drawn_on():
    """The generator moves the arterial and delayed phases by a few millimetres; the training cache
    moves them back (as registration does at inference), so arterial-only patches and their labels
    agree. Checked with the moved phase against the venous one: NCC before and after."""
    from PancreasAILib.phases import Phase
    from PancreasAILib.synthesis import SynthesisConfig, procedural_anatomy, synthesize_case
    from PancreasAILib.synthesis.dataset import on_truth_anatomy

    config = SynthesisConfig.coarse(p_tumour=0.0, misalign_max_mm=6.0, misalign_max_deg=3.0, noise=False)
    case = synthesize_case(procedural_anatomy(2), config, seed=2)
    moved = {p: t for p, t in case.transforms.items() if p != Phase.VENOUS}
    aligned = on_truth_anatomy(case.phases, moved)
    assert aligned[Phase.VENOUS] is case.phases[Phase.VENOUS]

    def ncc(a, b):
        a, b = (sitk.GetArrayFromImage(x).astype(np.float64).ravel() for x in (a, b))
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    venous = case.phases[Phase.VENOUS]
    for phase in (Phase.ARTERIAL, Phase.DELAYED):
        before, after = ncc(case.phases[phase], venous), ncc(aligned[phase], venous)
        assert after > before + 0.02, (phase, before, after)
