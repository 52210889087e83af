"""`pancreasai train stage1|stage2|anomaly`: preprocess, train with checkpoints, validate, register weights.

The stages are separate, as in nnU-Net: data comes from the synthesis module on the training split
of the anatomy maps (`--synthetic N`), from an nnU-Net-raw dataset (`--data`), or for stage 2 from
correction records exported by the Slicer module (`--corrections`); it is preprocessed once into a
cache, then trained. Under `torchrun` the same command trains with DDP.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from PancreasAILib.cascade.gland_level import reference_levels
from PancreasAILib.cascade.spec import StageSpec
from PancreasAILib.cli.common import add_progress_option, make_progress
from PancreasAILib.cli.train_data import build_caches, describe_cache
from PancreasAILib.cli.train_register import MODEL_NAMES, register_run, trained_gland_reference
from PancreasAILib.errors import InputError
from PancreasAILib.training.augment import INTENSITY_AUGMENTATIONS
from PancreasAILib.training.trainer import TrainConfig, Trainer, default_spec

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the stage-1, stage-2 or anomaly models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE")
    stages.required = True
    for stage in (1, 2):
        sub = stages.add_parser(
            f"stage{stage}",
            help=(
                "coarse pancreas network" if stage == 1 else "multi-phase tumour network with the PDAC head"
            ),
        )
        _add_segmentation_arguments(sub, stage)
        sub.set_defaults(func=run, stage_number=stage)
    anomaly = stages.add_parser(
        "anomaly", help="DDPM and noise-conditioned classifier of the anomaly heatmap"
    )
    try:
        module = importlib.import_module("PancreasAILib.cli.train_anomaly")
    except ModuleNotFoundError:
        anomaly.set_defaults(func=_anomaly_missing)
    else:
        module.add_arguments(anomaly)
        anomaly.set_defaults(func=module.run)


def _anomaly_missing(args: argparse.Namespace) -> int:
    raise InputError("The anomaly trainer is not part of this installation.", "Update PancreasAI.")


def _add_segmentation_arguments(parser: argparse.ArgumentParser, stage: int) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="synthesise N training cases from the train split of --anatomy",
    )
    data.add_argument(
        "--procedural",
        type=int,
        default=0,
        metavar="N",
        help="also N synthetic cases on procedural anatomy (bodies beyond the maps; default 0)",
    )
    data.add_argument(
        "--anatomy",
        type=Path,
        default=Path("../shared/data/anatomy"),
        metavar="DIR",
        help="anatomy label maps (default ../shared/data/anatomy), or 'procedural'",
    )
    data.add_argument(
        "--data", type=Path, metavar="RAW_DIR", help="an nnU-Net-raw dataset (imagesTr/, labelsTr/)"
    )
    if stage == 2:
        data.add_argument(
            "--corrections",
            type=Path,
            metavar="DIR",
            help="fine-tune from correction records exported by the Slicer module",
        )
    data.add_argument("--cache", type=Path, metavar="DIR", help="preprocessed cases (default RUN/cache)")
    data.add_argument(
        "--val-cases",
        type=int,
        default=8,
        metavar="N",
        help="synthetic validation cases from the training anatomy with another seed (default 8)",
    )
    data.add_argument(
        "--val-maps",
        nargs="+",
        default=[],
        metavar="NAME",
        help="leave-maps-out validation: keep these train-split maps (e.g. btcv_l2r/0023) out of training "
        "and draw the --val-cases validation cases from them only",
    )
    data.add_argument(
        "--val-procedural",
        type=int,
        default=0,
        metavar="N",
        help="also N validation cases on procedural bodies, so model selection rewards other anatomy",
    )
    data.add_argument(
        "--data-seed", type=int, default=1, help="seed of the synthetic training data (default 1)"
    )
    data.add_argument("--workers", type=int, default=2, help="processes for synthesis (default 2)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        type=Path,
        required=True,
        metavar="DIR",
        help="run folder (resumes when it exists); under torchrun spell it --run-dir",
    )
    opt.add_argument(
        "--init-from-shipped",
        action="store_true",
        help="start from the shipped weights of this stage instead of random ones (longer training)",
    )
    opt.add_argument(
        "--steps",
        type=int,
        default=3000,
        help="optimiser steps (default 3000); 0 prepares the training and validation caches and stops",
    )
    opt.add_argument("--batch", type=int, default=2)
    opt.add_argument("--lr", type=float, default=2e-3)
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument(
        "--loss",
        choices=("hybrid", "ce"),
        default="hybrid",
        help="hybrid: Dice + focal + SSIM (default); ce: cross-entropy only (better calibrated)",
    )
    opt.add_argument(
        "--boundary",
        type=float,
        default=0.0 if stage == 1 else 2.0,
        help="extra loss weight on class borders (Qiu et al.; 0 = off)",
    )
    opt.add_argument(
        "--p-all-phases",
        type=float,
        default=0.4,
        help="phase dropout: share of patches with every present phase (default 0.4)",
    )
    opt.add_argument(
        "--p-venous-only",
        type=float,
        default=0.0,
        help="extra share of venous-only patches on top of the uniform subsets (default 0)",
    )
    if stage == 2:
        opt.add_argument(
            "--healthy-share",
            type=float,
            metavar="P",
            help="share of patches drawn from tumour-free cases (default: cases as they come, about 1 in 5 "
            "of the synthetic ones); more teaches the network that a gland need not hold a tumour",
        )
    if stage == 2:
        opt.add_argument(
            "--gland-relative",
            action="store_true",
            help="shift each phase so the gland sits at a fixed level before the network sees it (levels "
            "from the training cases, stored with the weights): lesion-to-gland contrast instead of absolute "
            "HU, for other contrast levels and scanners",
        )
    opt.add_argument(
        "--elastic",
        type=float,
        default=0.0,
        metavar="VOXELS",
        help="smooth elastic deformation of the rotated/scaled patches, largest offset in voxels "
        "(in-plane; half along z); bends organs against each other (default 0: affine only)",
    )
    opt.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.75, 1.3),
        metavar=("MIN", "MAX"),
        help="zoom range of the rotated/scaled patches; above 1 a body looks smaller, so raise MAX for "
        "small patients (default 0.75 1.3; the BTCV maps are large adults, AMOS 0013 is about 0.75 of them)",
    )
    opt.add_argument(
        "--intensity-augmentation",
        choices=sorted(INTENSITY_AUGMENTATIONS),
        default="standard",
        help="standard: per-phase HU gain, offset, noise and blur (the shipped recipe); strong: also a random "
        "monotone bend of the HU scale and a gamma, wider gain/offset/noise (other scanners and intensity models); "
        "contrast: standard plus one contrast factor 0.7-1.35 shared by a study's phases (tube voltage, dose)",
    )
    opt.add_argument("--val-every", type=int, default=250)
    opt.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    opt.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    opt.add_argument(
        "--channels", type=int, nargs="+", metavar="C", help="widths per level (default: shipped)"
    )
    if stage == 2:
        opt.add_argument("--large", action="store_true", help="the DiffuPan-sized network (for GPUs)")
    parser.add_argument(
        "--register",
        action="store_true",
        help="copy the best weights into Resources/models and record them in the manifest",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="with --register: add the best weights to the registered network as a further member "
        "(probabilities averaged) instead of replacing it; refit the likelihood with `pancreasai calibrate`",
    )
    parser.add_argument(
        "--version-tag",
        metavar="VERSION",
        help="with --register: the version recorded in the manifest (default: the package version and the "
        "best step, e.g. 0.2.0+s1200)",
    )
    add_progress_option(parser)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {name} was asked for, but no CUDA GPU is available.", "Use --device cpu or auto."
        )
    return name


def run(args: argparse.Namespace) -> int:
    from PancreasAILib.training.datasets import load_cache

    stage = args.stage_number
    if args.elastic < 0:
        raise InputError(f"--elastic {args.elastic} is negative.", "Pass 0 (off) or an offset such as 2.")
    if not 0 < args.scale[0] <= args.scale[1]:
        raise InputError(
            f"--scale {args.scale[0]} {args.scale[1]} is not a zoom range.", "Pass MIN <= MAX, both above 0."
        )
    if args.ensemble and not args.register:
        raise InputError("--ensemble adds the trained weights to the registry.", "Add --register.")
    if args.init_from_shipped and (args.channels or getattr(args, "large", False)):
        raise InputError(
            "--init-from-shipped keeps the shipped network's widths; --channels/--large change them.",
            "Drop one of the two options.",
        )
    if args.val_maps and args.init_from_shipped:
        log.warning(
            "--init-from-shipped starts from weights trained on every train-split map, so the --val-maps "
            "validation is not on unseen anatomy; train from scratch for an honest leave-maps-out score."
        )
    healthy_share = getattr(args, "healthy_share", None)
    if healthy_share is not None and not 0.0 <= healthy_share <= 1.0:
        raise InputError(
            f"--healthy-share {healthy_share} is not a share.", "Pass a value in [0, 1], e.g. 0.4."
        )
    shares = (args.p_all_phases, args.p_venous_only)
    if min(shares) < 0 or sum(shares) > 1:
        raise InputError(
            f"--p-all-phases {args.p_all_phases} and --p-venous-only {args.p_venous_only} are not shares of "
            "the training patches: each must be at least 0 and together at most 1.",
            "Pass values such as --p-all-phases 0.35 --p-venous-only 0.3.",
        )
    if args.steps < 0:
        raise InputError(f"--steps {args.steps} is negative.", "Pass 0 (prepare the caches only) or more.")
    if args.steps == 0 and args.register:
        raise InputError("--steps 0 trains nothing, so there is nothing to --register.", "Pass --steps N.")
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = make_progress(args.progress)
    args.run.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    start = time.perf_counter()
    cache, val_cache = build_caches(args, progress)
    if args.steps == 0:  # preprocessing as its own stage: synthesis can run apart from training
        info = describe_cache(cache)
        print(
            f"caches ready: {info['cases']} training cases ({info['domain_randomised_cases']} with randomised "
            f"intensities) in {cache}; validation cases in {val_cache}"
        )
        return 0
    config = TrainConfig(
        stage=stage,
        run_dir=args.run,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        loss=args.loss,
        boundary=args.boundary,
        p_all_phases=args.p_all_phases,
        p_venous_only=args.p_venous_only,
        healthy_share=healthy_share,
        elastic_voxels=args.elastic,
        scale=tuple(args.scale),
        intensity=args.intensity_augmentation,
        val_every=args.val_every,
        device=device,
        channels=tuple(args.channels) if args.channels else None,
        large=getattr(args, "large", False),
        spec=default_spec(stage),
    )
    corrections = getattr(args, "corrections", None) is not None
    continued_reference = None
    if corrections or args.init_from_shipped:
        from PancreasAILib.models.registry import get_entry, locate_weights

        entry = get_entry(MODEL_NAMES[stage])
        config.init_weights = locate_weights(entry)
        config.net_config = entry.config
        continued_reference = StageSpec.from_dict(entry.input_spec).gland_reference_hu
        if corrections:  # fine-tune on a radiologist's corrections gently
            config.lr = min(config.lr, 2e-4)
    train_cases = load_cache(cache)
    # Gland levels: those a resumed run started with, else those of the weights it continues (they
    # expect that input), else measured on the training cases when asked for.
    reference = trained_gland_reference(args.run) or continued_reference
    if reference is None and getattr(args, "gland_relative", False):
        reference = reference_levels(train_cases)
    config.spec = replace(config.spec, gland_reference_hu=reference)
    if config.spec.gland_reference_hu is not None:
        print(f"stage 2 input relative to the gland, levels (HU, A/V/D): {config.spec.gland_reference_hu}")
    val = load_cache(val_cache) if val_cache.is_dir() else train_cases[:2]
    trainer = Trainer(config, train_cases, val, progress=progress, cache_dir=cache)
    summary = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    print(json.dumps({"stage": stage, "best": summary, "minutes": round(minutes, 1)}, indent=2))
    if args.register and int(os.environ.get("RANK", "0")) == 0:
        entry = register_run(stage, args, summary, minutes)
        added = entry.member_entries()[-1]  # the new weights: the entry itself, or its newest member
        print(f"registered {entry.name} {entry.version} (sha256 {added.sha256[:12]}…) in the model manifest")
        if args.ensemble:
            print(
                "the PDAC likelihood was calibrated on the old outputs: refit it with `pancreasai calibrate`"
            )
    return 0
