"""`pancreasai evaluate --task heatmap`: the anomaly heatmap on synthetic cases from held-out anatomy.

Cases are synthesised from the held-out maps (BTCV 0025-0030, AMOS 0013; never used in training
or calibration), cached, and run through `AnomalyModel.heatmap` for each setting of the table
(L, S, steps, phases). Prints a Markdown table and writes it with per-row JSON under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PancreasAILib.cli.train_anomaly import DEFAULT_ANATOMY, DEFAULT_CACHE


def _setting(text: str):
    from PancreasAILib.anomaly.evaluation import Setting

    parts = text.split(":")
    phases = parts[3] if len(parts) > 3 and parts[3] else "avd"
    encoding = parts[4] if len(parts) > 4 and parts[4] else "ddim"
    smooth_z = float(parts[5]) if len(parts) > 5 and parts[5] else None
    return Setting(int(parts[0]), float(parts[1]), int(parts[2]), phases, encoding, smooth_z)


def parse_part(text: str) -> tuple[int, int]:
    """K/N with 1 <= K <= N (rows K, K + N, ... of the table)."""
    from PancreasAILib.errors import InputError

    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n:
        raise InputError(
            f"--part {text!r} is not K/N with 1 <= K <= N.",
            "Use e.g. --part 1/2 and --part 2/2 (K counts from 1).",
        )
    return k, n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--anatomy",
        type=Path,
        default=DEFAULT_ANATOMY,
        metavar="DIR",
        help="organ label maps; only the fixed 'heldout' split is used (default ../shared/data/anatomy)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE / "heldout",
        metavar="DIR",
        help="cache of held-out cases (default work_tmp/anomaly/cache/heldout)",
    )
    parser.add_argument("--cases", type=int, default=14, metavar="N", help="held-out cases (default 14)")
    parser.add_argument(
        "--seed", type=int, default=1001, metavar="S", help="seed of the held-out cases (1001)"
    )
    parser.add_argument(
        "--setting",
        type=_setting,
        action="append",
        metavar="L:S:STEPS[:PHASES[:ENCODING[:SMOOTH_Z_MM]]]",
        help="a row of the table, e.g. 250:8:10, 250:8:10:v, 250:8:10:avd:noise or 150:10:10:avd:ddim:0 "
        "(repeatable; default: the calibrated operating point, the same without smoothing across slices, "
        "then L, S and steps varied, then venous-only and arterial+venous)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="fixed Dice threshold (default: the calibrated one stored with the weights)",
    )
    parser.add_argument(
        "--dr-fraction",
        type=float,
        default=0.0,
        metavar="P",
        help="share of domain-randomised (SynthSeg-like) cases; 0 = literature intensities (default), "
        "1 = a robustness set (use another --cache)",
    )
    parser.add_argument(
        "--part",
        default="1/1",
        metavar="K/N",
        help="run only every N-th row starting at row K (to spread the table over processes)",
    )
    parser.add_argument("--threads", type=int, default=1, metavar="K", help="torch CPU threads (1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write table.md and rows.json here"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from PancreasAILib.anomaly.evaluation import (
        by_size_class,
        default_grid,
        format_size_table,
        format_table,
        run_grid,
        slice_accuracy,
    )
    from PancreasAILib.anomaly.heatmap import AnomalyModel
    from PancreasAILib.training.anomaly_data import CacheSpec, build_cache, list_cases, load_cached_case

    torch.set_num_threads(args.threads)
    build_cache(
        CacheSpec(
            str(args.anatomy),
            "heldout",
            args.cases,
            seed=args.seed,
            dr_fraction=args.dr_fraction,
            p_tumour=1.0,
        ),
        args.cache,
    )
    cases = [load_cached_case(p) for p in list_cases(args.cache)[: args.cases]]
    model = AnomalyModel.load(device=args.device)
    threshold = args.threshold if args.threshold is not None else float(model.defaults["threshold"])
    anatomies = sorted({c.meta["anatomy"] for c in cases})
    print(
        f"{len(cases)} held-out cases ({', '.join(anatomies)}); threshold {threshold:.2f}; "
        f"models {model.info['ddpm']}, {model.info['classifier']}",
        flush=True,
    )
    accuracy = slice_accuracy(model, cases)
    print(
        f"classifier per-slice accuracy (t=0, all phases): {accuracy['slice_accuracy']:.3f} over "
        f"{accuracy['slices']} slices ({accuracy['tumour_slices']} with tumour)",
        flush=True,
    )
    k, n = parse_part(args.part)
    grid = (args.setting or default_grid(model.defaults))[k - 1 :: n]
    rows = run_grid(model, cases, grid, threshold, log=lambda m: print(m, flush=True))
    table = format_table(rows, threshold)
    if rows:  # the first row's cases by PDAC size class: where the map fails first
        first = rows[0].setting
        table += (
            f"\n\nBy tumour volume (L={first.noise_level} S={first.guidance:g} steps={first.steps} "
            f"phases={first.phases}):\n\n" + format_size_table(rows[0])
        )
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(table + "\n")
        body = {
            "threshold": threshold,
            "cases": len(cases),
            "anatomy": anatomies,
            "models": model.info,
            "classifier": accuracy,
            "rows": [r.to_dict() for r in rows],
            "by_size_class": by_size_class(rows[0]) if rows else [],
        }
        (args.out / "rows.json").write_text(json.dumps(body, indent=2) + "\n")
    return 0
