"""`pancreasai train anomaly`: train the anomaly heatmap's denoiser and classifier on synthetic CT.

Steps (each resumable): synthesise and cache ROI cases from the training anatomy only; build the
slice bank; train the denoiser and/or the classifier for a time budget with checkpoints; register
the EMA weights in Resources/models (manifest + sha256) as "anomaly_ddpm" / "anomaly_classifier";
optionally calibrate the heatmap's normalisation and threshold on validation cases made from the
training anatomy (never the held-out maps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PancreasAILib.anomaly.preprocess import PreprocessSpec
from PancreasAILib.anomaly.weights import SMOOTH_Z_CANDIDATES_MM
from PancreasAILib.models.ddpm import DDPMConfig
from PancreasAILib.models.noise_classifier import NoiseClassifierConfig

if TYPE_CHECKING:
    import torch

    from PancreasAILib.training.anomaly_trainer import TrainConfig

DEFAULT_ANATOMY = Path("../shared/data/anatomy")
DEFAULT_CACHE = Path("work_tmp/anomaly/cache")
MODEL_NAMES = {"ddpm": "anomaly_ddpm", "classifier": "anomaly_classifier"}
CARD = {
    "intended_use": "Research use only, not for clinical use: an anomaly overlay for pancreatic CT research.",
    "training_data": "Synthetic multi-phase CT made by PancreasAILib.synthesis from real BTCV organ label maps "
    "(train split: btcv_l2r 0001-0010, 0021-0024); BTCV terms: research use only.",
    "licence": "Research use only (derived from BTCV anatomy).",
    "card": "Resources/models/cards/anomaly.md",
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--anatomy",
        type=Path,
        default=DEFAULT_ANATOMY,
        metavar="DIR",
        help="organ label maps; only the fixed 'train' split is used (default ../shared/data/anatomy)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        metavar="DIR",
        help="where synthetic ROI cases are cached (default work_tmp/anomaly/cache)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("work_tmp/anomaly/run"),
        metavar="DIR",
        help="checkpoints, final weights and training records (default work_tmp/anomaly/run)",
    )
    parser.add_argument(
        "--model",
        choices=("ddpm", "classifier", "both", "none"),
        default="both",
        help="which network to train (two processes can train one each in parallel); none: only --calibrate",
    )
    parser.add_argument(
        "--cases", type=int, default=280, metavar="N", help="training cases to synthesise (280)"
    )
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="seed of cases and training (1)")
    parser.add_argument(
        "--minutes", type=float, default=25.0, metavar="M", help="wall-clock budget per network (default 25)"
    )
    parser.add_argument("--iterations", type=int, default=20000, metavar="N", help="iteration cap (20000)")
    parser.add_argument("--batch", type=int, default=32, metavar="B", help="crops per iteration (32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (1e-3)")
    parser.add_argument("--threads", type=int, default=1, metavar="K", help="torch CPU threads (1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--ddpm-base",
        type=int,
        default=DDPMConfig.base,
        metavar="C",
        help=f"denoiser width (default {DDPMConfig.base}; larger for GPUs)",
    )
    parser.add_argument(
        "--ddpm-mults",
        type=_ints,
        default=DDPMConfig.mults,
        metavar="1,2,2,2",
        help="denoiser channel multipliers per level (depth = their count)",
    )
    parser.add_argument(
        "--classifier-base",
        type=int,
        default=NoiseClassifierConfig.base,
        metavar="C",
        help=f"classifier width (default {NoiseClassifierConfig.base})",
    )
    parser.add_argument(
        "--classifier-region",
        action="store_true",
        help="give the classifier the dilated pancreas as an input plane and pool its logits only over it "
        "(the guidance then acts inside the gland; the region comes from the mask, never the tumour)",
    )
    parser.add_argument("--t-max", type=int, default=500, help="largest denoiser training timestep (500)")
    parser.add_argument(
        "--classifier-t-max",
        type=int,
        default=350,
        help="largest classifier training timestep (350; >= the L used)",
    )
    parser.add_argument(
        "--p-all-phases", type=float, default=0.4, help="phase dropout: share of crops with all phases (0.4)"
    )
    parser.add_argument(
        "--classifier-literature-only",
        action="store_true",
        help="train the classifier on literature-intensity cases only (domain-randomised cases can have no "
        "tumour contrast at all, which is label noise for a classifier; the denoiser always sees the mix)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="do not copy the weights into Resources/models and the manifest",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="after training, fit the heatmap's normalisation floor and threshold on "
        "validation cases from the training anatomy and record them with the weights",
    )
    parser.add_argument(
        "--calibration-cases",
        type=int,
        default=16,
        metavar="N",
        help="validation cases for --calibrate (16; made from the training anatomy with seed + 2000)",
    )
    parser.add_argument(
        "--calibration-guidances",
        type=float,
        nargs="+",
        default=[10.0, 30.0, 100.0, 300.0, 1000.0],
        metavar="S",
        help="guidance scales for --calibrate to choose among (default 10 30 100 300 1000)",
    )
    parser.add_argument(
        "--calibration-noise-levels",
        type=int,
        nargs="+",
        metavar="L",
        help="noise levels for --calibrate to choose among with the guidance scale (default: keep 250)",
    )
    parser.add_argument(
        "--calibration-smooth-z",
        type=float,
        nargs="+",
        default=list(SMOOTH_Z_CANDIDATES_MM),
        metavar="MM",
        help="Gaussian sigmas (mm) of smoothing across slices for --calibrate to choose among (default "
        f"{' '.join(f'{v:g}' for v in SMOOTH_Z_CANDIDATES_MM)}; no network passes: applied to the same reconstructions)",
    )
    parser.add_argument(
        "--init-from-shipped",
        action="store_true",
        help="start each network from its registered weights (and their widths) instead of at random; "
        "a run with a checkpoint resumes from it instead",
    )
    parser.add_argument("--version-tag", default="0.1.0", help="version recorded in the manifest (0.1.0)")


def _start_from_registered(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], TrainConfig]:
    """The registered weights of `cfg.model` (sha256-checked) and `cfg` with their network widths."""
    import dataclasses

    from PancreasAILib.models.registry import load_model_weights

    state, entry = load_model_weights(MODEL_NAMES[cfg.model])
    if cfg.model == "ddpm":
        return state, dataclasses.replace(cfg, ddpm=DDPMConfig.from_dict(entry.config))
    return state, dataclasses.replace(cfg, classifier=NoiseClassifierConfig.from_dict(entry.config))


def run(args: argparse.Namespace) -> int:
    from PancreasAILib.training.anomaly_data import (
        CacheSpec,
        SliceBank,
        build_cache,
        list_cases,
        load_cached_case,
    )
    from PancreasAILib.training.anomaly_trainer import TrainConfig, train_anomaly_model

    command = "pancreasai " + " ".join(sys.argv[1:]) if sys.argv else ""
    spec = PreprocessSpec()
    cache = args.cache / "train"
    start = time.time()
    build_cache(CacheSpec(str(args.anatomy), "train", args.cases, seed=args.seed), cache)
    paths = list_cases(cache)[: args.cases]
    models = {"both": ("ddpm", "classifier"), "none": ()}.get(args.model, (args.model,))
    banks: dict[bool, SliceBank] = {}
    for which in models:
        literature_only = which == "classifier" and args.classifier_literature_only
        if literature_only not in banks:
            chosen = [
                p for p in paths if not (literature_only and load_cached_case(p).meta["domain_randomise"])
            ]
            banks[literature_only] = SliceBank(chosen, spec)
            print(
                f"slice bank: {len(banks[literature_only])} slices from {len(chosen)} cases "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
        bank = banks[literature_only]
        cfg = TrainConfig(
            model=which,
            out_dir=args.out,
            seed=args.seed,
            iterations=args.iterations,
            minutes=args.minutes,
            batch=args.batch,
            lr=args.lr,
            threads=args.threads,
            device=args.device,
            ddpm=DDPMConfig(base=args.ddpm_base, mults=tuple(args.ddpm_mults)),
            classifier=NoiseClassifierConfig(base=args.classifier_base, region_input=args.classifier_region),
            preprocess=spec,
            t_max=args.t_max if which == "ddpm" else args.classifier_t_max,
            p_all_phases=args.p_all_phases,
        )
        init_state = None
        if args.init_from_shipped:
            init_state, cfg = _start_from_registered(cfg)
        result = train_anomaly_model(cfg, bank, log=lambda m: print(m, flush=True), init_state=init_state)
        print(
            f"{which}: {result.iterations} iterations in {result.seconds / 60:.1f} min, "
            f"{result.parameters} parameters, final loss {result.final_loss:.4f} -> {result.weights}",
            flush=True,
        )
        if not args.no_register:
            from PancreasAILib.anomaly.weights import register_anomaly_weights

            entry = register_anomaly_weights(
                which,
                result.weights,
                result.record,
                version=args.version_tag,
                card={**CARD, "command": command},
            )
            print(f"registered {entry.name} {entry.version} sha256 {entry.sha256[:12]}", flush=True)
    if args.calibrate:
        from PancreasAILib.anomaly.calibrate import calibrate_and_record

        calibrate_and_record(
            args.anatomy,
            args.cache / "val",
            seed=args.seed + 2000,
            cases=args.calibration_cases,
            guidances=tuple(args.calibration_guidances),
            noise_levels=tuple(args.calibration_noise_levels) if args.calibration_noise_levels else None,
            smooth_z_mm=tuple(args.calibration_smooth_z),
            log=print,
        )
    return 0
