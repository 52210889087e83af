"""Stage 1 from a user's nnU-Net v2 model folder or from TotalSegmentator's installed weights.

A trained nnU-Net v2 results folder (`.../DatasetXXX_Name/Trainer__Plans__3d_fullres` with
`plans.json`, `dataset.json` and `fold_*/checkpoint_final.pth`) replaces the shipped coarse
model: its plans give the spacing, patch, axis order and intensity normalisation, its
`dataset.json` the labels, and every fold present is averaged. The gland probability is the sum of
the classes whose names say pancreas (plus tumour/lesion classes of pancreas models).
TotalSegmentator stores its models as such folders; `find_totalsegmentator()` locates them.
Checkpoints are read with `torch.load(weights_only=True)`: no code from the file runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from PancreasAILib.cascade.sliding import sliding_window
from PancreasAILib.cascade.spec import StageSpec
from PancreasAILib.errors import InputError
from PancreasAILib.models.nnunet_arch import NnUNetArchitecture, PlainConvUNet
from PancreasAILib.models.registry import ModelEntry, sha256_of
from PancreasAILib.phases import PHASE_ORDER

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
GLAND_WORDS = ("pancrea",)
LESION_WORDS = ("tumor", "tumour", "lesion", "pdac", "cancer")
# TotalSegmentator v2 tasks holding the pancreas: the 3 mm "fast" model first (CPU), then the organs model.
TOTALSEG_TASKS = (
    "Dataset297_TotalSegmentator_total_3mm_1559subj",
    "Dataset291_TotalSegmentator_part1_organs_1559subj",
)


def _safe_load(path: Path) -> dict:
    """An nnU-Net checkpoint without running code: tensors, containers, numpy scalars and torch.device only."""
    allowed = [np.dtype, _numpy_scalar(), torch.device]
    allowed += [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
            raise InputError(
                f"{path} could not be read as a weights-only nnU-Net checkpoint ({type(error).__name__}: {error}).",
                "Use a checkpoint written by nnU-Net v2 (fold_N/checkpoint_final.pth).",
            ) from error


def _numpy_scalar():
    """numpy's scalar reconstructor (moved to numpy._core in numpy 2), allowed for logged metrics."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(
            f"{path} is missing: the folder is not an nnU-Net v2 model folder.",
            "Point at .../DatasetXXX_Name/<trainer>__<plans>__3d_fullres (with plans.json, "
            "dataset.json and fold_*/checkpoint_final.pth).",
        )
    return json.loads(path.read_text())


@dataclass
class NnUNetStage1:
    """A stage-1 pancreas model from an nnU-Net v2 folder: `predict_probability` as the cascade expects."""

    folder: Path
    networks: list[PlainConvUNet]
    spec: StageSpec  # spacing (x, y, z) of the model's grid; patch (z, y, x) of the original axes
    patch: tuple[int, ...]  # in the model's (transposed) axis order
    transpose: tuple[int, int, int]
    channels: list[str]  # dataset.json channel names, in input order
    normalisation: list[tuple[str, dict]]
    gland_labels: list[int]
    entry: ModelEntry
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, folder: Path, configuration: str = "3d_fullres", device: str = "cpu") -> NnUNetStage1:
        folder = Path(folder)
        plans, dataset = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
        if "regions_class_order" in dataset:
            raise InputError(
                f"{folder} is a region-based nnU-Net model (sigmoid outputs).",
                "Use a model trained with plain labels (softmax), such as TotalSegmentator's.",
            )
        config = plans.get("configurations", {}).get(configuration)
        if config is None:
            raise InputError(
                f"{folder}/plans.json has no {configuration!r} configuration.",
                f"Use a 3D model; configurations found: {sorted(plans.get('configurations', {}))}.",
            )
        labels = {str(k): int(v) for k, v in dataset["labels"].items() if not isinstance(v, list)}
        gland = [v for k, v in labels.items() if v > 0 and any(w in k.lower() for w in GLAND_WORDS)]
        if not gland:
            raise InputError(
                f"{folder}/dataset.json has no pancreas label ({', '.join(labels)}).",
                "Use a model that segments the pancreas (e.g. TotalSegmentator's organs model).",
            )
        # a pancreas model's lesion classes (e.g. PANORAMA's PDAC) belong to the gland the box must hold
        gland += [v for k, v in labels.items() if k.lower() in LESION_WORDS and v not in gland]
        channels = [str(dataset["channel_names"][k]) for k in sorted(dataset["channel_names"], key=int)]
        arch = NnUNetArchitecture.from_plans(config, len(channels), max(labels.values()) + 1)
        folds = sorted(p for p in folder.glob("fold_*") if p.is_dir())
        files = [next((f / c for c in CHECKPOINTS if (f / c).is_file()), None) for f in folds]
        files = [f for f in files if f is not None]
        if not files:
            raise InputError(
                f"No fold_*/checkpoint_final.pth in {folder}.", "Train or download the model first."
            )
        networks, digest = [], hashlib.sha256()
        for path in files:
            net = PlainConvUNet(arch)
            state = _safe_load(path)["network_weights"]
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as error:
                raise InputError(
                    f"{path} does not match the PlainConvUNet its plans describe: {error}",
                    "Only nnU-Net's default plain U-Net is supported as stage 1.",
                ) from error
            networks.append(net.to(device).eval())
            digest.update(sha256_of(path).encode())  # chunked, not the whole checkpoint in memory again
        transpose = tuple(int(v) for v in plans.get("transpose_forward", (0, 1, 2)))
        spacing_t = [float(v) for v in config["spacing"]]
        spacing_zyx = [0.0, 0.0, 0.0]
        for model_axis, original_axis in enumerate(transpose):
            spacing_zyx[original_axis] = spacing_t[model_axis]
        patch = tuple(int(v) for v in config["patch_size"])
        properties = plans.get("foreground_intensity_properties_per_channel", {})
        normalisation = [
            (scheme, properties.get(str(c), {})) for c, scheme in enumerate(config["normalization_schemes"])
        ]
        version = f"{folder.parent.name}/{folder.name} folds {[f.parent.name for f in files]}"
        entry = ModelEntry(
            name="stage1_nnunet", version=version, file=files[0].name, sha256=digest.hexdigest()
        )
        spec = StageSpec(
            spacing=tuple(spacing_zyx[::-1]), patch=tuple(np.array(patch)[np.argsort(transpose)])
        )
        return cls(
            folder,
            networks,
            spec,
            patch,
            transpose,
            channels,
            normalisation,
            gland,
            entry,
            torch.device(device),
        )

    def _channel_arrays(self, arrays: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The model's input channels from our phases: a phase named like the channel, else venous, else any."""
        present = [p for p, m in zip(PHASE_ORDER, mask, strict=True) if m]
        preferred = [p for p in (PHASE_ORDER[1], PHASE_ORDER[0], PHASE_ORDER[2]) if p in present]
        out = []
        for name in self.channels:
            named = [p for p in present if p.value in name.lower()]
            out.append(arrays[PHASE_ORDER.index((named or preferred)[0])])
        return np.stack(out).astype(np.float32)

    def normalise(self, channels: np.ndarray) -> np.ndarray:
        out = np.empty_like(channels, dtype=np.float32)
        for c, (scheme, props) in enumerate(self.normalisation):
            x = channels[c]
            if scheme == "CTNormalization":
                x = np.clip(x, props["percentile_00_5"], props["percentile_99_5"])
                out[c] = (x - props["mean"]) / max(float(props["std"]), 1e-8)
            elif scheme in ("ZScoreNormalization", "ZScoreNormalisation"):
                out[c] = (x - x.mean()) / max(float(x.std()), 1e-8)
            else:
                raise InputError(
                    f"The nnU-Net model normalises with {scheme!r}, which stage 1 does not support.",
                    "Use a CT model (CTNormalization) or a z-score model.",
                )
        return out

    @torch.no_grad()
    def predict_probability(self, arrays: np.ndarray, mask: np.ndarray, grid: sitk.Image) -> np.ndarray:
        """Gland probability (Z, Y, X) on `grid` from HU phases (P, Z, Y, X) already on that grid."""
        image = self.normalise(self._channel_arrays(arrays, mask))
        image = np.ascontiguousarray(np.transpose(image, (0, *(a + 1 for a in self.transpose))))
        inputs = torch.from_numpy(image).to(self.device)
        total = None
        for net in self.networks:
            probs, _ = sliding_window(
                lambda w, net=net: (net(w), None), inputs, self.patch, overlap=0.5, batch=1
            )
            gland = probs[self.gland_labels].sum(dim=0)
            total = gland if total is None else total + gland
        assert total is not None
        back = np.argsort(self.transpose)
        return np.transpose((total / len(self.networks)).cpu().numpy(), back).astype(np.float32)


def find_totalsegmentator() -> Path:
    """The folder of an installed TotalSegmentator model that segments the pancreas."""
    home = Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator"))
    results = home / "nnunet" / "results"
    for task in TOTALSEG_TASKS:
        for folder in sorted((results / task).glob("*__3d_fullres")):
            if (folder / "plans.json").is_file() and any(folder.glob("fold_*/checkpoint_final.pth")):
                return folder
    raise InputError(
        f"No TotalSegmentator model with the pancreas under {results}.",
        "Install TotalSegmentator and run it once (`TotalSegmentator -i ct.nii.gz -o out --fast`) so its "
        "weights are downloaded, or set TOTALSEG_HOME_DIR; or pass an nnU-Net model folder instead.",
    )


def load_external_stage1(source: str, device: str = "cpu") -> NnUNetStage1:
    """`totalsegmentator` or an nnU-Net v2 model folder."""
    folder = find_totalsegmentator() if source.lower() == "totalsegmentator" else Path(source)
    if not folder.is_dir():
        raise InputError(
            f"--stage1-model {source}: no such folder.",
            "Give an nnU-Net v2 model folder or the word totalsegmentator.",
        )
    return NnUNetStage1.load(folder, device=device)
