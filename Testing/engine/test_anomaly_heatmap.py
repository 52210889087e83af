"""The anomaly heatmap engine: preprocessing, the heatmap contract, missing phases, registry loading.

Networks here are tiny and random (weights registered into a temporary Resources folder), so the
tests check the plumbing and the contract, not the quality; the quality check with the shipped
weights on held-out anatomy runs only when those weights and ../shared/data are present.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from PancreasAILib.anomaly import AnomalyModel, HeatmapResult
from PancreasAILib.anomaly.heatmap import smooth_across_slices
from PancreasAILib.anomaly.metrics import auroc, case_metrics
from PancreasAILib.anomaly.preprocess import PreprocessSpec, dilate_mm, prepare_slices, restore
from PancreasAILib.anomaly.weights import register_anomaly_weights, update_heatmap_settings
from PancreasAILib.evaluation.overlap import dice_score
from PancreasAILib.models.ddpm import DDPMConfig, TinyUNet
from PancreasAILib.models.noise_classifier import NoiseClassifier, NoiseClassifierConfig
from PancreasAILib.models.registry import WeightsError, read_manifest, save_weights
from PancreasAILib.training.anomaly_trainer import TrainConfig

SPACING = (3.0, 1.5, 1.5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; several would only fight over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def phantom_roi(shape=(12, 60, 80), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3, Z, Y, X) HU with a bright ellipse "pancreas", a darker "tumour" in it, fat around; labels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    pancreas = ((y - 30) / 10) ** 2 + ((x - 40) / 25) ** 2 + ((z - 6) / 5) ** 2 < 1
    tumour = ((y - 30) / 5) ** 2 + ((x - 45) / 5) ** 2 + ((z - 6) / 2) ** 2 < 1
    labels = np.where(tumour, 2, np.where(pancreas, 1, 0)).astype(np.uint8)
    roi = np.full((3, *shape), -100.0, np.float32)
    for c, (gland, lesion) in enumerate(((120, 65), (95, 70), (75, 65))):
        roi[c][pancreas] = gland
        roi[c][tumour] = lesion
    roi += rng.normal(0, 12, roi.shape).astype(np.float32)
    return roi, labels, labels > 0


def tiny_networks(seed: int = 0, region_input: bool = False) -> tuple[TinyUNet, NoiseClassifier]:
    torch.manual_seed(seed)
    ddpm = TinyUNet(DDPMConfig(base=8, mults=(1, 2), emb=16))
    for p in ddpm.parameters():  # zero-initialised output layers would make every map zero
        p.data.add_(0.05 * torch.randn_like(p))
    return ddpm, NoiseClassifier(
        NoiseClassifierConfig(base=8, mults=(1, 2), emb=16, region_input=region_input)
    )


def make_registry(tmp_path: Path, region_input: bool = False) -> Path:
    ddpm, clf = tiny_networks(region_input=region_input)
    cfg = TrainConfig(model="ddpm", out_dir=tmp_path, ddpm=ddpm.config, classifier=clf.config, t_max=300)
    record = {**cfg.record(), "iterations_done": 0}
    root = tmp_path / "models"
    for which, net in (("ddpm", ddpm), ("classifier", clf)):
        weights = save_weights(net.state_dict(), tmp_path / f"{which}.safetensors")
        register_anomaly_weights(which, weights, record, version="test", card={"note": "test"}, root=root)
    return root


@pytest.fixture()
def registry_root(tmp_path: Path) -> Path:
    """A temporary Resources/models with tiny random anomaly networks registered."""
    return make_registry(tmp_path)


def test_region_classifier_pools_only_over_the_region():
    torch.manual_seed(0)
    config = NoiseClassifierConfig(base=8, mults=(1, 2), emb=16, region_input=True)
    clf = NoiseClassifier(config).eval()
    x, t, pm = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.ones(2, 3)
    region = torch.zeros(2, 1, 32, 32)
    region[:, :, :16, :16] = 1  # the top-left quadrant: 4 x 4 of the 8 x 8 logit cells (stride 4)
    with pytest.raises(ValueError, match="region"):
        clf(x, t, pm)
    logits = clf.logit_map(x, t, pm, region)
    r = config.pool_sharpness
    expected = (torch.logsumexp(r * logits[:, 0, :4, :4].flatten(1), dim=1) - math.log(16)) / r
    assert torch.allclose(clf(x, t, pm, region), expected, atol=1e-5)
    everywhere = (torch.logsumexp(r * logits.flatten(1), dim=1) - math.log(64)) / r
    assert not torch.allclose(expected, everywhere, atol=1e-4)
    # no region pixel at all: pool over every cell rather than return -inf
    empty = clf(x, t, pm, torch.zeros_like(region))
    assert torch.isfinite(empty).all()


def test_heatmap_with_a_region_classifier(tmp_path):
    model = AnomalyModel.load(root=make_registry(tmp_path, region_input=True))
    assert model.classifier.config.region_input
    roi, _, mask = phantom_roi()
    heat = model.heatmap(roi, np.ones(3, bool), mask, SPACING, noise_level=100, guidance=4.0, steps=4).heatmap
    assert heat.shape == mask.shape and 0 < heat.max() <= 1
    assert heat[~dilate_mm(mask, SPACING, model.spec.dilation_mm)].max() == 0


def test_dilate_mm_is_physical():
    mask = np.zeros((9, 21, 21), bool)
    mask[4, 10, 10] = True
    out = dilate_mm(mask, (3.0, 1.0, 1.0), 3.0)
    assert out[4, 10, 13] and not out[4, 10, 14]  # 3 mm in-plane = 3 voxels
    assert out[5, 10, 10] and not out[6, 10, 10]  # 3 mm through-plane = 1 slice


@pytest.mark.parametrize("shape,spacing", [((12, 60, 80), SPACING), ((7, 45, 33), (2.5, 0.8, 0.8))])
def test_prepare_and_restore_handle_any_roi(shape, spacing):
    roi, _, mask = phantom_roi(shape)
    spec = PreprocessSpec()
    batch = prepare_slices(roi, np.array([True, True, False]), mask, spacing, spec)
    assert (
        batch.x.shape[1] == 3
        and batch.x.shape[2] % spec.multiple == 0
        and batch.x.shape[3] % spec.multiple == 0
    )
    assert batch.x[:, 2].abs().max() == 0  # the missing phase is zero
    assert batch.x.abs().max() <= spec.clip + 1e-5
    back = restore(torch.ones(batch.x.shape[0], *batch.x.shape[2:]), batch, shape)
    assert back.shape == shape
    assert back[~batch.dilated].max() == 0
    assert back[mask].min() > 0.9  # the whole pancreas is covered by the crop


def test_metrics():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.ones(4), np.array([0, 0, 1, 1])) == 0.5
    assert np.isnan(auroc(np.ones(3), np.zeros(3)))
    assert dice_score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == pytest.approx(2 / 3)
    m = case_metrics(np.array([0.0, 0.1, 0.9]), np.array([1, 1, 2]), 0.5)
    assert m["auroc"] == 1.0 and m["dice"] == 1.0


def test_heatmap_contract_zero_outside_mask_and_missing_phases(registry_root):
    model = AnomalyModel.load(root=registry_root)
    roi, _, mask = phantom_roi()
    result = model.heatmap(roi, np.ones(3, bool), mask, SPACING, noise_level=100, guidance=4.0, steps=4)
    assert isinstance(result, HeatmapResult)
    heat = result.heatmap
    assert heat.dtype == np.float32 and heat.shape == mask.shape
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0
    dilated = dilate_mm(mask, SPACING, model.spec.dilation_mm)
    assert heat[~dilated].max() == 0
    assert result.passes_per_slice == 12  # 4 encode + 4 decode + 4 classifier gradients
    assert result.settings["noise_level"] == 100 and result.settings["seed"] == 0
    assert "anomaly_ddpm test" in result.settings["ddpm"]
    # venous only: garbage (even NaN) in the absent channels is never read
    venous = np.array([False, True, False])
    a = model.heatmap(roi, venous, mask, SPACING, noise_level=100, steps=4).heatmap
    garbage = roi.copy()
    garbage[[0, 2]] = np.nan
    b = model.heatmap(garbage, venous, mask, SPACING, noise_level=100, steps=4).heatmap
    assert np.isfinite(b).all() and np.array_equal(a, b) and a.max() > 0
    # deterministic
    again = model.heatmap(roi, np.ones(3, bool), mask, SPACING, noise_level=100, guidance=4.0, steps=4)
    assert np.array_equal(heat, again.heatmap)


def test_heatmap_rejects_bad_settings_and_handles_empty_masks(registry_root):
    model = AnomalyModel.load(root=registry_root)
    roi, _, mask = phantom_roi()
    with pytest.raises(ValueError, match="largest timestep"):
        model.heatmap(roi, np.ones(3, bool), mask, SPACING, noise_level=900)
    with pytest.raises(ValueError, match="phase"):
        model.heatmap(roi, np.zeros(3, bool), mask, SPACING, noise_level=100, steps=2)
    empty = model.heatmap(roi, np.ones(3, bool), np.zeros_like(mask), SPACING, noise_level=100, steps=2)
    assert empty.heatmap.shape == mask.shape and empty.heatmap.max() == 0


def test_registry_checksum_mismatch_fails_clearly(registry_root):
    entry = read_manifest(registry_root)["anomaly_classifier"]
    assert entry.config["base"] == 8 and entry.input_spec["t_max"] == 300
    path = registry_root / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        AnomalyModel.load(root=registry_root)


def test_calibrated_settings_are_kept_with_the_weights(registry_root):
    update_heatmap_settings({"floor": 0.123, "threshold": 0.4}, root=registry_root)
    model = AnomalyModel.load(root=registry_root)
    assert model.defaults["floor"] == 0.123 and model.defaults["threshold"] == 0.4
    manifest = json.loads((registry_root / "manifest.json").read_text())
    assert manifest["models"]["anomaly_ddpm"]["input_spec"]["heatmap"]["threshold"] == 0.4


@pytest.mark.shared
def test_shipped_model_finds_a_tumour_on_heldout_anatomy(shared_data):
    """The registered weights (if trained) on one fresh case from a held-out map, venous only too."""
    import SimpleITK as sitk

    from PancreasAILib.phases import PHASE_ORDER
    from PancreasAILib.synthesis import load_anatomy
    from PancreasAILib.synthesis.case import synthesize_case
    from PancreasAILib.training.anomaly_data import fast_config

    if "anomaly_ddpm" not in read_manifest():
        pytest.skip("no anomaly weights registered in Resources/models")
    torch.set_num_threads(1)
    model = AnomalyModel.load()
    case = synthesize_case(
        load_anatomy(shared_data / "anatomy" / "btcv_l2r" / "0027.nii.gz"),
        fast_config(False, 1.0),
        seed=77,
        case_index=0,
    )
    labels = sitk.GetArrayFromImage(case.labels)
    box = tuple(
        slice(max(a - 4, 0), b + 5)
        for a, b in zip(np.argwhere(labels > 0).min(0), np.argwhere(labels > 0).max(0), strict=True)
    )
    roi = np.stack([sitk.GetArrayFromImage(case.phases[p])[box] for p in PHASE_ORDER]).astype(np.float32)
    labels = labels[box]
    for phases in (np.ones(3, bool), np.array([False, True, False])):
        result = model.heatmap(roi, phases, labels > 0, SPACING)
        assert case_metrics(result.heatmap, labels, 0.5)["auroc"] > 0.7


def test_noise_encoding_is_seeded_and_saves_the_encoder_passes(registry_root):
    model = AnomalyModel.load(root=registry_root)
    roi, _, mask = phantom_roi()
    kw = dict(noise_level=100, guidance=2.0, steps=4, encoding="noise")
    a = model.heatmap(roi, np.ones(3, bool), mask, SPACING, seed=1, **kw)
    b = model.heatmap(roi, np.ones(3, bool), mask, SPACING, seed=1, **kw)
    c = model.heatmap(roi, np.ones(3, bool), mask, SPACING, seed=2, **kw)
    assert np.array_equal(a.heatmap, b.heatmap) and not np.array_equal(a.heatmap, c.heatmap)
    assert a.passes_per_slice == 8 and a.settings["encoding"] == "noise"  # 4 decode + 4 classifier


def test_unset_settings_take_the_calibrated_values(registry_root):
    update_heatmap_settings({"noise_level": 120, "guidance": 3.0, "steps": 3}, root=registry_root)
    model = AnomalyModel.load(root=registry_root)
    roi, _, mask = phantom_roi()
    result = model.heatmap(roi, np.array([False, True, False]), mask, SPACING)
    assert (result.settings["noise_level"], result.settings["guidance"], result.settings["steps"]) == (
        120,
        3.0,
        3,
    )
    assert result.passes_per_slice == 9


def test_calibration_chooses_noise_level_and_guidance_by_validation_auroc(registry_root, monkeypatch):
    """Every (L, S, smoothing across slices) is scored on the validation cases; the best is stored."""
    from types import SimpleNamespace

    from PancreasAILib.anomaly import calibrate

    cases = []
    for seed in (0, 1):
        roi, labels, _ = phantom_roi(seed=seed)
        cases.append(SimpleNamespace(roi_hu=roi, labels=labels, spacing_zyx=SPACING))
    monkeypatch.setattr(calibrate, "build_cache", lambda spec, cache: None)  # no anatomy needed
    monkeypatch.setattr(calibrate, "list_cases", lambda cache: [0, 1])
    monkeypatch.setattr(calibrate, "load_cached_case", lambda index: cases[index])
    settings = calibrate.calibrate_and_record(
        Path("unused"),
        Path("unused"),
        cases=2,
        guidances=(1.0, 5.0),
        noise_levels=(60, 120),
        smooth_z_mm=(0.0, 4.5),
        base=calibrate.Setting(noise_level=120, guidance=1.0, steps=3),
        root=registry_root,
        log=lambda message: None,
    )
    tried = settings["calibration"]["validation_auroc_by_setting"]
    assert set(tried) == {f"L={n} S={g} z={z}mm" for n in (60, 120) for g in (1, 5) for z in (0, 4.5)}
    best = max(tried, key=tried.get)
    assert best == f"L={settings['noise_level']} S={settings['guidance']:g} z={settings['smooth_z_mm']:g}mm"
    assert settings["calibration"]["validation_auroc"] == tried[best]
    assert settings["floor"] > 0 and 0.05 <= settings["threshold"] <= 0.95
    model = AnomalyModel.load(root=registry_root)
    assert (model.defaults["noise_level"], model.defaults["guidance"], model.defaults["threshold"]) == (
        settings["noise_level"],
        settings["guidance"],
        settings["threshold"],
    )
    assert model.defaults["smooth_z_mm"] == settings["smooth_z_mm"]


def test_smoothing_across_slices_lowers_slice_by_slice_errors_and_keeps_a_lesion():
    """Errors independent from slice to slice average out; a lesion spanning slices does not."""
    rng = np.random.default_rng(0)
    shape = (24, 32, 32)
    region = np.zeros(shape, bool)
    region[2:22, 4:28, 4:28] = True
    lesion = np.zeros(shape, bool)
    lesion[8:14, 12:20, 12:20] = True  # 18 mm along z at 3 mm slices
    # per-slice blobs of error, as a 2D network makes them: smooth in-plane, independent across slices
    noise = ndi.gaussian_filter(rng.normal(size=shape), (0, 2, 2)) * 6
    raw = np.where(region, np.abs(noise) + 0.4 * lesion, 0).astype(np.float32)
    smoothed = smooth_across_slices(raw, region, 4.5, 3.0)
    before = auroc(raw[region], lesion[region])
    after = auroc(smoothed[region], lesion[region])
    assert after > before + 0.05, (before, after)
    assert not smoothed[~region].any()
    # a map constant inside the region stays constant at its top and bottom slices (no zeros leak in)
    flat = smooth_across_slices(region.astype(np.float32), region, 4.5, 3.0)
    assert np.allclose(flat[region], 1.0)
    assert smooth_across_slices(raw, region, 0.0, 3.0) is raw
