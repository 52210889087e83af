"""The caches `pancreasai train stage1|stage2` learns and validates on, and what they hold.

Training cases come from the synthesis module on the train split of the anatomy maps, from an
nnU-Net-raw dataset or from correction records; validation cases from the training maps with
another seed or, with `--val-maps`, only from maps kept out of training (leave-maps-out).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from PancreasAILib.errors import InputError


def build_caches(args: argparse.Namespace, progress) -> tuple[Path, Path]:
    """The training and validation caches the arguments ask for (resumable; returns both folders)."""
    from PancreasAILib.synthesis.dataset import PROCEDURAL, resolve_anatomy
    from PancreasAILib.training.preprocess import (
        PROCEDURAL_FIRST_INDEX,
        build_raw_dataset_cache,
        build_synthetic_cache,
    )

    cache = args.cache or args.run / "cache"
    val_cache = args.run / "cache_val"
    uses_maps = args.synthetic > 0 or args.val_cases > 0
    # Resolved and split once, so a wrong --val-maps name fails before any synthesis.
    training_maps, validation_maps = (
        _split_maps(resolve_anatomy(args.anatomy, "train"), args.val_maps) if uses_maps else ([], [])
    )
    corrections = getattr(args, "corrections", None)
    if corrections is not None:
        from PancreasAILib.training.corrections_data import build_corrections_cache

        build_corrections_cache(corrections, cache, progress=progress)
    elif args.data is not None:
        build_raw_dataset_cache(args.data, cache, progress=progress)
    elif args.synthetic > 0:
        build_synthetic_cache(
            training_maps,
            cache,
            cases=args.synthetic,
            seed=args.data_seed,
            workers=args.workers,
            progress=progress,
        )
    if args.procedural > 0 and corrections is None and args.data is None:
        build_synthetic_cache(
            [PROCEDURAL],
            cache,
            cases=args.procedural,
            seed=args.data_seed,
            first_index=PROCEDURAL_FIRST_INDEX,
            workers=args.workers,
            progress=progress,
        )
    if not cache.is_dir():
        raise InputError(
            "No training data was given.",
            "Pass --synthetic N (with --anatomy), --data RAW_DIR, --corrections DIR or --cache DIR.",
        )
    if args.val_cases > 0:
        build_synthetic_cache(
            validation_maps or training_maps,
            val_cache,
            cases=args.val_cases,
            seed=args.data_seed + 1000,
            workers=args.workers,
            progress=progress,
        )
    if args.val_procedural > 0:
        build_synthetic_cache(
            [PROCEDURAL],
            val_cache,
            cases=args.val_procedural,
            seed=args.data_seed + 1000,
            first_index=PROCEDURAL_FIRST_INDEX,
            workers=args.workers,
            progress=progress,
        )
    if args.val_maps:
        _check_maps_apart(cache, val_cache, set(args.val_maps))
    return cache, val_cache


def _split_maps(sources: list[str], held_out: list[str]) -> tuple[list[str], list[str]]:
    """(training maps, validation maps) for leave-maps-out validation; every held-out name must exist."""
    from PancreasAILib.synthesis.anatomy import anatomy_name

    names = {anatomy_name(s): s for s in sources}
    unknown = sorted(set(held_out) - set(names))
    if unknown:
        raise InputError(
            f"--val-maps names {', '.join(unknown)}, which are not train-split maps under --anatomy.",
            f"Choose among: {', '.join(sorted(names))}.",
        )
    training = [s for n, s in names.items() if n not in held_out]
    if held_out and not training:
        raise InputError("--val-maps holds out every training map.", "Keep at least one map for training.")
    return training, [names[n] for n in held_out]


def _check_maps_apart(cache: Path, val_cache: Path, held_out: set[str]) -> None:
    """Refuse a training cache that holds cases of the validation maps (e.g. one built before)."""
    leaked = held_out & set(describe_cache(cache)["anatomy_maps"]) if cache.is_dir() else set()
    if leaked:
        raise InputError(
            f"The training cache {cache} holds cases made from {', '.join(sorted(leaked))}, "
            "which --val-maps keeps for validation.",
            "Pass a new --cache folder so the training cases are made without those maps.",
        )
    held_in_val = set(describe_cache(val_cache)["anatomy_maps"]) if val_cache.is_dir() else set()
    stray = {m for m in held_in_val - held_out if not m.startswith("procedural/")}
    if stray:
        raise InputError(
            f"The validation cache {val_cache} holds cases from training maps ({', '.join(sorted(stray))}).",
            "Use a new --run folder, or delete its cache_val.",
        )


def describe_cache(cache: Path) -> dict:
    """What the cached training cases are: source, anatomy maps, seeds, intensity models (from their meta)."""
    import numpy as np

    metas = []
    for path in sorted(cache.glob("*.npz")):
        if not path.name.startswith("."):
            with np.load(path, allow_pickle=False) as data:
                metas.append(json.loads(str(data["meta"])))
    sources = Counter(m.get("source", "?") for m in metas)
    return {
        "cases": len(metas),
        "sources": dict(sources),
        "anatomy_maps": sorted({m["anatomy"] for m in metas if "anatomy" in m}),
        "seeds": sorted({m["seed"] for m in metas if "seed" in m}),
        "domain_randomised_cases": sum(bool(m.get("domain_randomised")) for m in metas),
        "description": (
            "synthetic multi-phase contrast CT made by PancreasAI's synthesis module from real organ "
            "label maps (BTCV via Learn2Reg, research use only; the fixed train split only)"
            if sources.get("synthetic")
            else "preprocessed cases from the given dataset"
        ),
    }
