"""Stage 1 from an nnU-Net v2 model folder (and TotalSegmentator's layout), with a tiny model built here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cascade_fixtures import make_small_case
from model_fixtures import make_tiny_models

from PancreasAILib.cascade.external import NnUNetStage1, find_totalsegmentator
from PancreasAILib.cli.main import main
from PancreasAILib.errors import InputError
from PancreasAILib.models.nnunet_arch import NnUNetArchitecture, PlainConvUNet
from PancreasAILib.phases import Phase

ARCH_KWARGS = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
CT_PROPERTIES = {"mean": 60.0, "std": 50.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0}
LABELS = {"background": 0, "liver": 1, "pancreas": 2}


def _plans(legacy: bool = False, transpose=(0, 1, 2)) -> dict:
    config = {
        "patch_size": [16, 32, 32],
        "spacing": [6.0, 4.0, 4.0],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
    }
    if legacy:  # nnU-Net v2 before 2.4 (TotalSegmentator's plans look like this)
        config.update(
            UNet_class_name="PlainConvUNet",
            UNet_base_num_features=4,
            unet_max_num_features=16,
            conv_kernel_sizes=ARCH_KWARGS["kernel_sizes"],
            pool_op_kernel_sizes=ARCH_KWARGS["strides"],
            n_conv_per_stage_encoder=[2, 2, 2],
            n_conv_per_stage_decoder=[2, 2],
        )
    else:
        config["architecture"] = {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": ARCH_KWARGS,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }
    return {
        "dataset_name": "Dataset999_Tiny",
        "transpose_forward": list(transpose),
        "transpose_backward": [int(v) for v in np.argsort(transpose)],
        "configurations": {"3d_fullres": config},
        "foreground_intensity_properties_per_channel": {"0": CT_PROPERTIES},
    }


def make_nnunet_folder(
    root: Path, *, folds=(0, 1), legacy=False, pancreas_bias=None, transpose=(0, 1, 2)
) -> Path:
    """An nnU-Net v2 results folder, with checkpoints shaped like nnU-Net's (numpy scalars, torch.device)."""
    folder = root / "Dataset999_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    plans = _plans(legacy, transpose)
    dataset = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    arch = NnUNetArchitecture.from_plans(plans["configurations"]["3d_fullres"], 1, 3)
    for fold in folds:
        torch.manual_seed(fold)
        net = PlainConvUNet(arch)
        if pancreas_bias is not None:  # a model that calls every voxel pancreas
            with torch.no_grad():
                net.decoder.seg_layers[-1].weight.zero_()
                net.decoder.seg_layers[-1].bias.copy_(torch.tensor([0.0, 0.0, pancreas_bias]))
        optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        checkpoint = {
            "network_weights": net.state_dict(),
            "optimizer_state": optimiser.state_dict(),
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [np.float64(0.5), np.float64(0.6)],
                "epoch_end_timestamps": [1.0, 2.0],
            },
            "_best_ema": np.float64(0.61),
            "current_epoch": 2,
            "init_args": {
                "plans": plans,
                "configuration": "3d_fullres",
                "fold": fold,
                "dataset_json": dataset,
                "device": torch.device("cpu"),
            },
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        (folder / f"fold_{fold}").mkdir()
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def test_state_dict_uses_nnunet_module_names():
    """Names as dynamic_network_architectures registers them (the decoder re-registers the encoder)."""
    arch = NnUNetArchitecture.from_plans(_plans()["configurations"]["3d_fullres"], 1, 3)
    keys = set(PlainConvUNet(arch).state_dict())
    for key in [
        "encoder.stages.0.0.convs.0.conv.weight",
        "encoder.stages.0.0.convs.0.all_modules.0.weight",
        "encoder.stages.2.0.convs.1.norm.bias",
        "decoder.encoder.stages.1.0.convs.0.conv.bias",
        "decoder.transpconvs.1.weight",
        "decoder.stages.0.convs.1.conv.weight",
        "decoder.seg_layers.0.weight",
        "decoder.seg_layers.1.bias",
    ]:
        assert key in keys, key


def test_both_plans_formats_describe_the_same_network():
    new = NnUNetArchitecture.from_plans(_plans()["configurations"]["3d_fullres"], 1, 3)
    old = NnUNetArchitecture.from_plans(_plans(legacy=True)["configurations"]["3d_fullres"], 1, 3)
    assert new == old


def test_a_model_folder_loads_and_predicts_on_its_own_grid(tmp_path):
    folder = make_nnunet_folder(tmp_path, transpose=(2, 1, 0))
    model = NnUNetStage1.load(folder)
    assert len(model.networks) == 2 and model.gland_labels == [2]
    assert model.spec.spacing == (
        6.0,
        4.0,
        4.0,
    )  # plans spacing is in the transposed (x, y, z) axis order here
    grid = sitk.Image([20, 24, 18], sitk.sitkUInt8)
    hu = np.random.default_rng(0).normal(40, 80, (3, 18, 24, 20)).astype(np.float32)
    prob = model.predict_probability(hu, np.array([False, True, False]), grid)
    assert prob.shape == (18, 24, 20) and np.all((prob >= 0) & (prob <= 1))
    # the two folds are averaged: one fold alone gives another map
    model.networks = model.networks[:1]
    assert not np.allclose(model.predict_probability(hu, np.array([False, True, False]), grid), prob)


def test_ct_normalisation_follows_the_plans():
    model = NnUNetStage1.__new__(NnUNetStage1)
    model.normalisation = [("CTNormalization", CT_PROPERTIES)]
    out = model.normalise(np.array([[[[-1000.0, 60.0, 1000.0]]]], np.float32))
    np.testing.assert_allclose(out.ravel(), [(-100 - 60) / 50, 0.0, (300 - 60) / 50])


def test_cascade_runs_with_an_nnunet_stage1(tmp_path, monkeypatch):
    monkeypatch.setenv("PANCREASAI_MODELS", str(make_tiny_models(tmp_path / "models")))
    folder = make_nnunet_folder(tmp_path / "nnunet", folds=(0,), pancreas_bias=8.0)
    case = make_small_case(tmp_path / "case", seed=5)
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            "--venous",
            str(case.phases[Phase.VENOUS]),
            "--out",
            str(out),
            "--no-heatmap",
            "--stage1-model",
            str(folder),
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["segmentation_status"] == "done"
    names = {m["name"] for m in report["models"]}
    assert "stage1_nnunet" in names and "stage1_pancreas" not in names


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    folder = make_nnunet_folder(tmp_path, folds=(0,))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"network_weights": Payload()}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(InputError, match="weights-only"):
        NnUNetStage1.load(folder)
    assert not marker.exists()


def test_a_model_without_pancreas_is_refused(tmp_path):
    folder = make_nnunet_folder(tmp_path, folds=(0,))
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "spleen": 2}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InputError, match="no pancreas label"):
        NnUNetStage1.load(folder)


def test_totalsegmentator_weights_are_found_where_it_installs_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="TotalSegmentator"):
        find_totalsegmentator()
    results = tmp_path / "ts" / "nnunet" / "results"
    built = make_nnunet_folder(tmp_path / "build", folds=(0,), legacy=True)
    target = results / "Dataset297_TotalSegmentator_total_3mm_1559subj" / built.name
    target.parent.mkdir(parents=True)
    built.rename(target)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts"))
    assert find_totalsegmentator() == target
    assert NnUNetStage1.load(target).gland_labels == [2]
