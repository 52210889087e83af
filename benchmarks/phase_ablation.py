"""The phase ablation of the references: segment a held-out dataset with every subset of phases, evaluate each.

    pancreasai synth --anatomy ../shared/data/anatomy --split heldout --cases 24 --seed 2026 --p-tumour 0.6 \
        --out work_tmp/heldout24
    python benchmarks/phase_ablation.py --data work_tmp/heldout24 --out work_tmp/ablation

For each subset (all three, each pair, each single phase) it runs `pancreasai segment --batch DATA
--phases SUBSET` (models loaded once per subset; heatmap off, it does not change the labels) and
`pancreasai evaluate`, then prints one table: pancreas and tumour Dice, lesion AP at IoU 0.10 and
0.15, patient AUROC, sensitivity and specificity. Existing prediction folders are reused, and so
are registrations of the same images (`segment --alignment-cache`, default OUT/alignment_cache;
point several runs over one dataset, e.g. two model folders, at one cache).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SUBSETS = [
    "arterial,venous,delayed",
    "arterial,venous",
    "venous,delayed",
    "arterial,delayed",
    "arterial",
    "venous",
    "delayed",
]
COLUMNS = [
    ("pancreas_dice", "pancreas Dice"),
    ("tumour_dice", "tumour Dice"),
    ("lesion_ap_iou0.10", "AP@0.10"),
    ("lesion_ap_iou0.15", "AP@0.15"),
    ("auroc", "AUROC"),
    ("sensitivity", "sens"),
    ("specificity", "spec"),
]


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="nnU-Net-raw held-out dataset (imagesTr, labelsTr)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subsets", nargs="+", default=SUBSETS)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1, help="subsets segmented at once (cores are shared)")
    parser.add_argument("--alignment-cache", type=Path, help="default OUT/alignment_cache")
    parser.add_argument(
        "--non-hypo-weight", type=float, help="passed to `segment` (default: the release's choice)"
    )
    parser.add_argument(
        "--segment-option",
        action="append",
        default=[],
        metavar="ARG",
        help="another argument passed to `segment`, e.g. --segment-option=--keep-bright-vessels (repeatable)",
    )
    args = parser.parse_args(argv)
    alignment_cache = args.alignment_cache or args.out / "alignment_cache"
    exe = str(Path(sys.executable).with_name("pancreasai"))
    env = dict(os.environ)
    if args.jobs > 1:  # share the cores instead of oversubscribing them
        threads = str(max(1, (os.cpu_count() or 2) // args.jobs))
        env.update(OMP_NUM_THREADS=threads, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=threads)

    def one(subset: str) -> dict:
        pred = args.out / subset.replace(",", "+")
        if not (pred / "batch.json").is_file():
            run(
                [
                    exe,
                    "segment",
                    "--batch",
                    str(args.data),
                    "--phases",
                    subset,
                    "--out",
                    str(pred),
                    "--no-heatmap",
                    "--progress",
                    "none",
                    "--overwrite",
                    "--alignment-cache",
                    str(alignment_cache),
                    *(
                        ["--non-hypo-weight", str(args.non_hypo_weight)]
                        if args.non_hypo_weight is not None
                        else []
                    ),
                    *args.segment_option,
                ],
                env,
            )
        result_file = pred / "evaluation.json"
        run(
            [
                exe,
                "evaluate",
                "--pred",
                str(pred),
                "--gt",
                str(args.data),
                "--bootstrap",
                str(args.bootstrap),
                "--json-out",
                str(result_file),
            ],
            env,
        )
        print(f"done {subset}", file=sys.stderr)
        return json.loads(result_file.read_text())

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = dict(zip(args.subsets, pool.map(one, args.subsets), strict=True))
    first = next(iter(rows.values()))
    print(f"{first['cases']} cases ({first['with_tumour']} with tumour); mean [95% bootstrap CI]")
    print(f"{'phases':<26}" + "".join(f"{title:>22}" for _, title in COLUMNS))
    for subset, result in rows.items():
        cells = []
        for key, _ in COLUMNS:
            value = result["summary"].get(key, float("nan"))
            low, high = result["ci95"].get(key, (float("nan"), float("nan")))
            cells.append(f"{value:6.3f} [{low:.2f},{high:.2f}]")
        print(f"{subset:<26}" + "".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
