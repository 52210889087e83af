"""Training of the anomaly denoiser (DDPM) and its noise-conditioned classifier, with checkpoints.

Both are trained on random 2D crops of cached synthetic ROI slices (training anatomy only):
- the denoiser learns the healthy appearance: only crops with no tumour pixel at all (an
  image-level criterion), eps-prediction MSE over the present phases, timesteps below `t_max`
  (the sampler never goes deeper than L <= t_max, so capacity is not spent on pure noise);
- the classifier learns tumour-vs-healthy from image-level labels on noised crops, classes balanced.
Every crop gets a random phase subset (phase dropout: missing channels zero and flagged).

Runs are time-boxed (`minutes`) and resumable: a checkpoint (model, EMA, optimiser, iteration) is
written every `checkpoint_every_s`; the random draws of iteration i depend only on (seed, i), so
a resumed run sees the same crops, phase subsets and noise as an uninterrupted one (the cosine
learning-rate decay follows whichever budget, iterations or minutes, is further used).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from PancreasAILib.anomaly.preprocess import PreprocessSpec
from PancreasAILib.anomaly.sampler import NoiseSchedule, q_sample
from PancreasAILib.models.ddpm import DDPMConfig, TinyUNet, count_parameters
from PancreasAILib.models.noise_classifier import NoiseClassifier, NoiseClassifierConfig
from PancreasAILib.models.registry import save_weights
from PancreasAILib.training.anomaly_data import SliceBank, random_phase_mask


@dataclass
class TrainConfig:
    """One training run of one of the two networks."""

    model: str  # "ddpm" or "classifier"
    out_dir: Path
    seed: int = 0
    iterations: int = 20000
    minutes: float = 25.0  # wall-clock budget; training stops at whichever limit comes first
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    t_max: int = 500  # timesteps are drawn from [0, t_max)
    p_all_phases: float = 0.4  # phase dropout: share of crops with every phase
    ema: float = 0.995
    threads: int = 1
    device: str = "cpu"
    checkpoint_every_s: float = 120.0
    log_every: int = 100
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    classifier: NoiseClassifierConfig = field(default_factory=NoiseClassifierConfig)
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)

    def record(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["ddpm"] = self.ddpm.to_dict()
        data["classifier"] = self.classifier.to_dict()
        return data


@dataclass
class TrainResult:
    weights: Path  # final (EMA) weights as safetensors
    iterations: int
    seconds: float
    parameters: int
    final_loss: float
    record: dict


def build_network(cfg: TrainConfig) -> torch.nn.Module:
    if cfg.model == "ddpm":
        return TinyUNet(cfg.ddpm)
    if cfg.model == "classifier":
        return NoiseClassifier(cfg.classifier)
    raise ValueError(f"Unknown anomaly model {cfg.model!r} (ddpm or classifier).")


def _step_generators(seed: int, it: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, it, 0x7A1]))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def _loss(model, cfg: TrainConfig, bank: SliceBank, alpha_bar: torch.Tensor, it: int) -> torch.Tensor:
    rng, gen = _step_generators(cfg.seed, it)
    size = cfg.preprocess.crop_px
    if cfg.model == "ddpm":
        x0 = torch.from_numpy(bank.healthy_batch(rng, cfg.batch, size))
        labels = region = None
    else:
        crops, regions, lab = bank.labelled_batch(rng, cfg.batch, size)
        x0, labels = torch.from_numpy(crops), torch.from_numpy(lab)
        region = torch.from_numpy(regions) if cfg.classifier.region_input else None
    mask = torch.from_numpy(random_phase_mask(rng, cfg.batch, cfg.p_all_phases)).float()
    t = torch.randint(0, cfg.t_max, (cfg.batch,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    dev = alpha_bar.device
    x0, mask, t, noise = x0.to(dev), mask.to(dev), t.to(dev), noise.to(dev)
    labels = labels.to(dev) if labels is not None else None
    region = region.to(dev) if region is not None else None
    keep = mask[:, :, None, None]
    x0, noise = x0 * keep, noise * keep
    xt = q_sample(x0, t, noise, alpha_bar) * keep
    if cfg.model == "ddpm":
        err = (model(xt, t, mask) - noise) ** 2 * keep
        return err.sum() / (keep.sum() * x0.shape[-1] * x0.shape[-2])
    return F.binary_cross_entropy_with_logits(model(xt, t, mask, region), labels)


def train_anomaly_model(
    cfg: TrainConfig, bank: SliceBank, log=print, init_state: dict[str, torch.Tensor] | None = None
) -> TrainResult:
    """Train (or resume) one network; returns where its EMA weights were written.

    `init_state`: weights to start from (e.g. the registered network, to continue it on new data);
    used only when the run has no checkpoint yet, so a resumed run ignores it.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    model = build_network(cfg).to(cfg.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt_path = cfg.out_dir / f"{cfg.model}_checkpoint.pt"
    it, elapsed, losses = 0, 0.0, []
    if ckpt_path.is_file():
        # weights_only: tensors and plain numbers only (numpy scalars allowed for older checkpoints)
        with torch.serialization.safe_globals(
            [np._core.multiarray.scalar, np.dtype, type(np.dtype("float64"))]
        ):
            state = torch.load(ckpt_path, map_location=cfg.device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        it, elapsed = int(state["iteration"]), float(state["elapsed"])
        log(f"{cfg.model}: resumed at iteration {it} ({elapsed / 60:.1f} min done)")
    elif init_state is not None:
        model.load_state_dict(init_state)
        ema.load_state_dict(init_state)
        log(f"{cfg.model}: starting from the given weights")
    alpha_bar = cfg.schedule.alpha_bar().to(cfg.device)
    log(
        f"{cfg.model}: {count_parameters(model)} parameters, {len(bank)} slices "
        f"({bank.positive_fraction:.0%} with tumour)"
    )

    def checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "iteration": it,
                "elapsed": elapsed,
            },
            tmp,
        )
        tmp.replace(ckpt_path)

    start, last_ckpt = time.time() - elapsed, time.time()
    while it < cfg.iterations and (time.time() - start) < cfg.minutes * 60:
        progress = min(1.0, max(it / cfg.iterations, (time.time() - start) / (cfg.minutes * 60)))
        lr = float(cfg.lr * min(1.0, (it + 1) / 200) * (0.55 + 0.45 * np.cos(np.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = _loss(model, cfg, bank, alpha_bar, it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        losses.append(float(loss.detach()))
        it += 1
        elapsed = time.time() - start
        if it % cfg.log_every == 0:
            log(
                f"{cfg.model}: it {it} loss {np.mean(losses[-cfg.log_every :]):.4f} lr {lr:.2e} {elapsed / 60:.1f} min"
            )
        if time.time() - last_ckpt > cfg.checkpoint_every_s:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    weights = save_weights(
        ema.state_dict(),
        cfg.out_dir / f"anomaly_{cfg.model}.safetensors",
        metadata={"iterations": str(it), "seed": str(cfg.seed)},
    )
    record = {
        **cfg.record(),
        "iterations_done": it,
        "minutes_done": round(elapsed / 60, 2),
        "slices": len(bank),
        "positive_slice_fraction": round(bank.positive_fraction, 3),
    }
    (cfg.out_dir / f"anomaly_{cfg.model}.json").write_text(json.dumps(record, indent=2) + "\n")
    final = float(np.mean(losses[-200:])) if losses else float("nan")
    return TrainResult(weights, it, elapsed, count_parameters(model), final, record)
