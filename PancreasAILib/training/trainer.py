"""The training loop of both stages: seeds, checkpoints and resume, validation, best-weights export, DDP.

One loop serves stage 1 (coarse pancreas) and stage 2 (multi-phase tumour + PDAC head). Under
`torchrun` it trains with DistributedDataParallel (gloo on CPU, nccl on GPU): every rank samples
its own patches from its own seed, gradients are averaged, rank 0 validates and writes. A run
folder holds `checkpoint.pt` (model, optimiser, step, sampler state; loaded with
`weights_only=True`), `best.safetensors`, `config.json` and `metrics.jsonl`, so a run resumes where
it stopped — in the next session if need be.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from PancreasAILib.cascade.gland_level import relative_to_gland
from PancreasAILib.cascade.grids import normalise_hu
from PancreasAILib.cascade.predict import predict_stage1, predict_stage2
from PancreasAILib.cascade.spec import STAGE1, STAGE2, StageSpec
from PancreasAILib.evaluation.overlap import dice_score
from PancreasAILib.models.multiphase import MultiPhaseConfig, MultiPhaseTumourNet
from PancreasAILib.models.registry import save_weights
from PancreasAILib.models.unet import CoarseUNet, CoarseUNetConfig
from PancreasAILib.progress import ProgressCallback, null_progress
from PancreasAILib.training.augment import INTENSITY_AUGMENTATIONS, validation_prior
from PancreasAILib.training.datasets import PatchSampler, cached_names
from PancreasAILib.training.losses import SegmentationLoss, classification_loss
from PancreasAILib.training.preprocess import load_case


@dataclass
class TrainConfig:
    stage: int
    run_dir: Path
    steps: int = 3000
    batch: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: str = "hybrid"  # or "ce"
    boundary: float = 0.0
    cls_weight: float = 0.3
    p_all_phases: float = 0.4  # phase dropout: share of patches with every phase
    p_venous_only: float = 0.0  # extra share of venous-only patches (beyond the uniform subsets)
    healthy_share: float | None = None  # stage 2: share of patches from tumour-free cases (None: as drawn)
    elastic_voxels: float = 0.0  # largest elastic offset on rotated/scaled patches (0: affine only)
    scale: tuple[float, float] = (0.75, 1.3)  # zoom range of those patches (> 1: the body looks smaller)
    intensity: str = "standard"  # a key of INTENSITY_AUGMENTATIONS (recorded by name in the run config)
    val_every: int = 250
    checkpoint_every: int = 50
    device: str = "cpu"
    channels: tuple[int, ...] | None = None  # None: the shipped small configuration
    large: bool = False  # DiffuPan-sized stage 2 (GPU)
    init_weights: Path | None = None  # start from these weights (fine-tuning on corrections)
    net_config: dict | None = None  # the architecture of `init_weights` (from its manifest entry)
    spec: StageSpec = field(default_factory=lambda: STAGE1)

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_AUGMENTATIONS:  # fail at configuration, not at the first batch
            known = ", ".join(sorted(INTENSITY_AUGMENTATIONS))
            raise ValueError(f"intensity augmentation {self.intensity!r} is not one of: {known}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["init_weights"] = str(self.init_weights) if self.init_weights else None
        data["spec"] = self.spec.to_dict()
        return data


def build_model(config: TrainConfig) -> tuple[nn.Module, dict]:
    if config.net_config is not None:
        if config.stage == 1:
            net_config = CoarseUNetConfig.from_dict(config.net_config)
            return CoarseUNet(net_config), net_config.to_dict()
        net_config = MultiPhaseConfig.from_dict(config.net_config)
        return MultiPhaseTumourNet(net_config), net_config.to_dict()
    if config.stage == 1:
        net_config = (
            CoarseUNetConfig(channels=tuple(config.channels)) if config.channels else CoarseUNetConfig()
        )
        return CoarseUNet(net_config), net_config.to_dict()
    net_config = MultiPhaseConfig.large() if config.large else MultiPhaseConfig()
    if config.channels:
        net_config.channels = tuple(config.channels)
    return MultiPhaseTumourNet(net_config), net_config.to_dict()


def validate(net: nn.Module, cases: list[dict], stage: int, spec: StageSpec, device: str) -> dict[str, float]:
    """Dice on whole validation volumes (stage 1: the scan; stage 2: the box, with a coarse prior)."""
    scores: dict[str, list[float]] = {}
    for case in cases:
        if stage == 1:
            prob = predict_stage1(net, normalise_hu(case["s1_image"]), case["phase_mask"], spec.patch, device)
            scores.setdefault("gland_dice", []).append(dice_score(prob >= 0.5, case["s1_label"] > 0))
        else:
            prior = validation_prior(case["s2_prior"])  # once per case, for both phase sets
            for name, mask in (("all", case["phase_mask"]), ("venous", np.array([False, True, False]))):
                hu = relative_to_gland(case["s2_image"], prior >= 0.5, mask, spec.gland_reference_hu)
                image = normalise_hu(hu)
                image[~mask] = 0.0
                probs, pdac = predict_stage2(net, image, prior, mask, spec.patch, device)
                label = probs.argmax(axis=0)
                truth = case["s2_label"]
                scores.setdefault(f"gland_dice_{name}", []).append(dice_score(label > 0, truth > 0))
                if (truth == 2).any():
                    scores.setdefault(f"tumour_dice_{name}", []).append(dice_score(label == 2, truth == 2))
                else:  # logged, not scored: too few tumour-free validation cases to select on
                    voxel_ml = float(np.prod(spec.spacing)) / 1000.0
                    scores.setdefault(f"false_tumour_ml_{name}", []).append(
                        float((label == 2).sum()) * voxel_ml
                    )
                scores.setdefault(f"pdac_brier_{name}", []).append((pdac - float((truth == 2).any())) ** 2)
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    if stage == 1:
        out["score"] = out["gland_dice"]
    else:
        out["score"] = (
            out["gland_dice_all"] + out.get("tumour_dice_all", 0.0) + out.get("tumour_dice_venous", 0.0)
        ) / 3 - 0.25 * out["pdac_brier_all"]
    return out


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        train_cases: list[dict],
        val_cases: list[dict],
        progress: ProgressCallback = null_progress,
        cache_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed + 1000 * self.rank)
        self.net, self.net_config = build_model(config)
        if config.init_weights:
            from safetensors.torch import load_file

            self.net.load_state_dict(load_file(str(config.init_weights)))
        self.net.to(self.device)
        self.model: nn.Module = (
            nn.parallel.DistributedDataParallel(self.net) if self.distributed else self.net
        )
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.sampler = PatchSampler(
            train_cases,
            config.stage,
            config.spec.patch,
            seed=config.seed + 7919 * self.rank,
            p_all_phases=config.p_all_phases,
            p_venous_only=config.p_venous_only,
            healthy_share=config.healthy_share,
            elastic_voxels=config.elastic_voxels,
            scale=config.scale,
            intensity=INTENSITY_AUGMENTATIONS[config.intensity],
            gland_reference_hu=config.spec.gland_reference_hu if config.stage == 2 else None,
        )
        self.val_cases = val_cases
        self.loss = SegmentationLoss(
            config.loss, classes=2 if config.stage == 1 else 3, boundary=config.boundary
        )
        self.step = 0
        self.best = -np.inf
        self.run_dir = Path(config.run_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_names = cached_names(self.cache_dir) if self.cache_dir else []

    # --- state --------------------------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best": float(self.best),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
        }
        tmp = self.run_dir / ".checkpoint.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path())

    def resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
        return True

    def _log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # --- loop ---------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        batch = {k: v.to(self.device) for k, v in self.sampler.batch(self.config.batch).items()}
        self.model.train()
        for group in self.optimizer.param_groups:  # nnU-Net's polynomial decay
            group["lr"] = self.config.lr * (1 - self.step / self.config.steps) ** 0.9
        if self.config.stage == 1:
            logits = self.model(batch["image"], batch["mask"])
            seg = self.loss(logits, batch["label"])
            loss, record = seg, {"seg": seg.item()}
        else:
            logits, scores = self.model(batch["image"], batch["prior"], batch["mask"])
            seg = self.loss(logits, batch["label"])
            cls = classification_loss(scores, batch["pdac"])
            loss, record = seg + self.config.cls_weight * cls, {"seg": seg.item(), "cls": cls.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 12.0)
        self.optimizer.step()
        return record

    def export_best(self, metrics: dict) -> None:
        meta = {
            "stage": str(self.config.stage),
            "step": str(self.step),
            "net_config": json.dumps(self.net_config),
        }
        save_weights(self.net.state_dict(), self.run_dir / "best.safetensors", metadata=meta)
        (self.run_dir / "best.json").write_text(
            json.dumps({"step": self.step, "metrics": metrics, "net_config": self.net_config}, indent=2)
        )

    def refresh_cache(self) -> int:
        """Load cases added to the cache folder since the start (when the cache is built alongside)."""
        if self.cache_dir is None:
            return 0
        names = [n for n in cached_names(self.cache_dir) if n not in set(self.cache_names)]
        new = [load_case(self.cache_dir / n) for n in names]
        self.cache_names += names
        if new:
            self.sampler.add(new)
        return len(new)

    def fit(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            world_size = dist.get_world_size() if self.distributed else 1
            (self.run_dir / "config.json").write_text(
                json.dumps(
                    {"train": self.config.to_dict(), "net_config": self.net_config, "world_size": world_size},
                    indent=2,
                )
            )
        resumed = self.resume()
        start, window = time.perf_counter(), []
        self.progress(
            f"train stage{self.config.stage}",
            self.step / self.config.steps,
            f"resumed at step {self.step}" if resumed else "start",
        )
        while self.step < self.config.steps:
            window.append(self.train_step())
            self.step += 1
            if self.rank != 0:
                continue
            if self.step % 10 == 0:
                mean = {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
                self._log({"step": self.step, "elapsed_s": round(time.perf_counter() - start, 1), **mean})
                self.progress(
                    f"train stage{self.config.stage}",
                    self.step / self.config.steps,
                    " ".join(f"{k} {v:.3f}" for k, v in mean.items()),
                )
                window = []
            if self.step % self.config.val_every == 0 or self.step == self.config.steps:
                self.refresh_cache()
                metrics = validate(
                    self.net, self.val_cases, self.config.stage, self.config.spec, self.config.device
                )
                self._log({"step": self.step, "validation": metrics})
                if metrics["score"] > self.best:
                    self.best = metrics["score"]
                    self.export_best(metrics)
                self.progress("validate", 1.0, " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        if self.distributed:
            dist.barrier()
        summary = (
            json.loads((self.run_dir / "best.json").read_text())
            if (self.run_dir / "best.json").exists()
            else {}
        )
        return summary


def default_spec(stage: int) -> StageSpec:
    return STAGE1 if stage == 1 else STAGE2
