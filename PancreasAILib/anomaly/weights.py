"""The anomaly models in the weight registry: what is recorded with them and how they are rebuilt.

The manifest entry carries everything needed to use the weights the way they were trained: the
network's constructor arguments (`config`), the slice preprocessing, the noise schedule, the
largest trained timestep and the heatmap's calibrated normalisation (`input_spec`). Weights are
loaded through the registry only (sha256-checked safetensors; no code runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from PancreasAILib.anomaly.preprocess import PreprocessSpec
from PancreasAILib.anomaly.sampler import NoiseSchedule
from PancreasAILib.models.ddpm import DDPMConfig, TinyUNet
from PancreasAILib.models.noise_classifier import NoiseClassifier, NoiseClassifierConfig
from PancreasAILib.models.registry import ModelEntry, load_model_weights, read_manifest, register_weights

DDPM_NAME = "anomaly_ddpm"
CLASSIFIER_NAME = "anomaly_classifier"

# Heatmap defaults before calibration: the reference's operating point and a 35 % threshold.
DEFAULT_HEATMAP = {
    "noise_level": 250,
    "guidance": 8.0,
    "steps": 10,
    "floor": 0.5,
    "threshold": 0.35,
    "smooth_mm": 4.0,
    "smooth_z_mm": 0.0,
    "grad_smooth_mm": 0.0,
}


# Sigmas (mm) of smoothing across slices that calibration chooses among when not told otherwise:
# applied to the same reconstructions, so trying several costs no network passes.
SMOOTH_Z_CANDIDATES_MM = (0.0, 3.0, 4.5, 6.0)


def _input_spec(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "channels": ["arterial", "venous", "delayed"],
        "missing_phases": "zero channel + phase-mask planes and embedding",
        "preprocess": record["preprocess"],
        "schedule": record["schedule"],
        "t_max": record["t_max"],
        "heatmap": dict(DEFAULT_HEATMAP),
    }


def register_anomaly_weights(
    which: str,
    weights: Path,
    record: dict[str, Any],
    *,
    version: str,
    card: dict[str, Any],
    root: Path | None = None,
) -> ModelEntry:
    """Record a trained network (ddpm or classifier) in the manifest, keeping an earlier calibration."""
    name = DDPM_NAME if which == "ddpm" else CLASSIFIER_NAME
    config = record["ddpm"] if which == "ddpm" else record["classifier"]
    spec = _input_spec(record)
    previous = read_manifest(root).get(name)
    if previous is not None and "heatmap" in previous.input_spec:
        spec["heatmap"] = previous.input_spec["heatmap"]
    training = {
        k: record[k]
        for k in ("seed", "iterations_done", "minutes_done", "batch", "lr", "slices")
        if k in record
    }
    return register_weights(
        name,
        weights,
        version=version,
        config=config,
        input_spec=spec,
        card={**card, "training": training},
        root=root,
    )


def update_heatmap_settings(settings: dict[str, Any], root: Path | None = None) -> ModelEntry:
    """Store calibrated heatmap settings with the denoiser's entry (the file and checksum are unchanged)."""
    entry = read_manifest(root)[DDPM_NAME]
    folder = root
    if folder is None:
        from PancreasAILib.models.registry import resources_dir

        folder = resources_dir()
    spec = {**entry.input_spec, "heatmap": {**entry.input_spec.get("heatmap", {}), **settings}}
    return register_weights(
        DDPM_NAME,
        folder / entry.file,
        version=entry.version,
        config=entry.config,
        input_spec=spec,
        card=entry.card,
        url=entry.url,
        root=root,
    )


def load_networks(
    device: str = "cpu", root: Path | None = None
) -> tuple[TinyUNet, NoiseClassifier, ModelEntry, ModelEntry]:
    """Both networks from the registry, in eval mode, with their manifest entries."""
    state, ddpm_entry = load_model_weights(DDPM_NAME, root)
    ddpm = TinyUNet(DDPMConfig.from_dict(ddpm_entry.config))
    ddpm.load_state_dict(state)
    state, cls_entry = load_model_weights(CLASSIFIER_NAME, root)
    classifier = NoiseClassifier(NoiseClassifierConfig.from_dict(cls_entry.config))
    classifier.load_state_dict(state)
    return ddpm.to(device).eval(), classifier.to(device).eval(), ddpm_entry, cls_entry


def specs_of(entry: ModelEntry) -> tuple[PreprocessSpec, NoiseSchedule, int, dict[str, Any]]:
    """Preprocessing, schedule, largest trained timestep and heatmap settings of the denoiser's entry."""
    spec = entry.input_spec
    return (
        PreprocessSpec.from_dict(spec["preprocess"]),
        NoiseSchedule(**spec["schedule"]),
        int(spec["t_max"]),
        {**DEFAULT_HEATMAP, **spec.get("heatmap", {})},
    )


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module
