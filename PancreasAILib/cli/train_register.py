"""Registering a finished training run: its best weights, a model card, and the release's choices kept.

A version names one set of weights; the card records the command, data and minutes; the input
specification carries what the network expects (its own, including gland levels it was trained
with) and the release's inference choices of the entry it replaces (`StageSpec.with_choices_of`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from PancreasAILib.cascade.spec import INFERENCE_CHOICES, StageSpec
from PancreasAILib.cli.train_data import describe_cache
from PancreasAILib.errors import InputError
from PancreasAILib.training.trainer import default_spec

MODEL_NAMES = {1: "stage1_pancreas", 2: "stage2_tumour"}


def register_run(stage: int, args: argparse.Namespace, summary: dict, minutes: float):
    from PancreasAILib import __version__
    from PancreasAILib.models.registry import WeightsError, add_ensemble_member, get_entry, register_weights

    best = args.run / "best.safetensors"
    if not best.is_file():
        raise InputError(f"{best} does not exist: the run has not validated yet.", "Train for more steps.")
    card = {
        "intended_use": "Research use only, not for clinical use.",
        "training_data": describe_cache(args.cache or args.run / "cache"),
        "command": "pancreasai " + " ".join(sys.argv[1:]),
        "data_seed": args.data_seed,
        "training_minutes": round(max(minutes, logged_training_minutes(args.run)), 1),
        "validation": summary.get("metrics", {}),
        "validation_step": summary.get("step"),
        "licence": "Weights: research use only (derived from BTCV label maps).",
    }
    base = get_entry(MODEL_NAMES[stage]).version if args.ensemble else __version__
    version = args.version_tag or f"{base}+s{summary.get('step', 0)}"
    _refuse_a_taken_version(MODEL_NAMES[stage], version, best)
    if args.ensemble:
        registered_levels = StageSpec.from_dict(get_entry(MODEL_NAMES[stage]).input_spec).gland_reference_hu
        if trained_gland_reference(args.run) != registered_levels:
            raise InputError(
                "The new weights read the scan relative to other gland levels than the registered ones, "
                "so their probabilities cannot be averaged.",
                "Register them on their own (without --ensemble), or train both the same way.",
            )
        return add_ensemble_member(MODEL_NAMES[stage], best, version=version, card=card)
    try:
        registered = get_entry(MODEL_NAMES[stage]).input_spec
    except WeightsError:  # nothing registered yet: the defaults
        registered = {}
    defaults = default_spec(stage).to_dict()
    kept = replace(default_spec(stage), gland_reference_hu=trained_gland_reference(args.run))
    kept = kept.with_choices_of(registered).to_dict()
    changed = {k: v for k, v in kept.items() if v != defaults[k] and k in INFERENCE_CHOICES}
    if changed:
        print(f"kept the release's inference choices for {MODEL_NAMES[stage]}: {json.dumps(changed)}")
    return register_weights(
        MODEL_NAMES[stage],
        best,
        version=version,
        config=summary.get("net_config", {}),
        input_spec=kept,
        card=card,
    )


def trained_gland_reference(run_dir: Path) -> tuple[float, float, float] | None:
    """The gland levels a run's network was trained with (its config.json), which its input spec must carry."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    spec = json.loads(path.read_text()).get("train", {}).get("spec")
    return StageSpec.from_dict(spec).gland_reference_hu if spec else None


def _refuse_a_taken_version(name: str, version: str, weights: Path) -> None:
    """A version names one set of weights: two runs that stopped at the same step must not share one."""
    from PancreasAILib.models.registry import WeightsError, get_entry, sha256_of

    try:
        registered = get_entry(name)
    except WeightsError:  # nothing registered yet
        return
    if registered.version == version and registered.sha256 != sha256_of(weights):
        raise InputError(
            f"{name} {version} is already registered with other weights.",
            "Name the new weights with --version-tag (e.g. the next release, 0.2.1).",
        )


def logged_training_minutes(run_dir: Path) -> float:
    """Wall minutes of the training loop over every process that worked on the run (from metrics.jsonl).

    Why from the log: a run resumed for registration only would otherwise claim its last few seconds."""
    total, last = 0.0, 0.0
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        elapsed = json.loads(line).get("elapsed_s")
        if elapsed is None:
            continue
        if elapsed < last:  # a new process started counting from zero
            total += last
        last = elapsed
    return (total + last) / 60.0
