"""`pancreasai evaluate`: score predictions against ground truth (segmentation), or the anomaly heatmap.

--task segmentation (default): pancreas and tumour Dice, NSD at 2 mm, HD95, lesion AP at IoU 0.10
and 0.15 (PANORAMA matching), patient AUROC, sensitivity and specificity, with bootstrap 95 %
intervals; a table on stdout and everything as JSON with --json-out.
--task heatmap: the anomaly heatmap's voxel AUROC, Dice and the sweep over L, S and steps.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from PancreasAILib.atomic import write_text_atomically
from PancreasAILib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predictions against ground truth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=("segmentation", "heatmap"), default="segmentation")
    parser.add_argument("--pred", type=Path, metavar="DIR", help="predictions: one sub-folder per case")
    parser.add_argument(
        "--gt", type=Path, metavar="DIR", help="ground truth: nnU-Net-raw dataset or label folder"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)"
    )
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="write the full result as JSON")
    heatmap_module = _heatmap_module()
    if heatmap_module is not None:
        group = parser.add_argument_group("heatmap task")
        heatmap_module.add_arguments(group)
    parser.set_defaults(func=run)


def _heatmap_module():
    try:
        return importlib.import_module("PancreasAILib.cli.evaluate_heatmap")
    except ModuleNotFoundError:
        return None


def run(args: argparse.Namespace) -> int:
    if args.task == "heatmap":
        module = _heatmap_module()
        if module is None:
            raise InputError("The heatmap evaluation is not part of this installation.", "Update PancreasAI.")
        return int(module.run(args))
    from PancreasAILib.evaluation.evaluate import evaluate_folder, format_table

    if args.pred is None or args.gt is None:
        raise InputError(
            "--pred and --gt are needed for --task segmentation.",
            "Give the predictions folder and the ground-truth folder.",
        )
    result = evaluate_folder(args.pred, args.gt, args.bootstrap)
    print(format_table(result))
    if args.json_out:
        write_text_atomically(args.json_out, json.dumps(result, indent=2, default=float) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0
