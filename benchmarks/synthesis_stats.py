"""Print measured statistics of synthetic CT over N cases against the literature (issue 3).

Organ mean HU per phase (in eroded organ masks, each phase measured where its organs are after
the recorded misalignment), tumour-to-parenchyma contrast per phase, and the labelled tumour
volumes against the PANORAMA quartiles. Every case gets a tumour.

    python benchmarks/synthesis_stats.py --cases 20 [--anatomy ../shared/data/anatomy|procedural]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_ANATOMY = REPO.parent / "shared" / "data" / "anatomy"


def main(argv: list[str] | None = None) -> int:
    from PancreasAILib.synthesis.case import SynthesisConfig
    from PancreasAILib.synthesis.stats import measure_statistics

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument(
        "--anatomy",
        default=str(DEFAULT_ANATOMY) if DEFAULT_ANATOMY.is_dir() else "procedural",
        help="anatomy folder or 'procedural' (default: ../shared/data/anatomy when present)",
    )
    parser.add_argument("--split", choices=("train", "heldout", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-thickness", type=float, default=2.5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    stats = measure_statistics(
        args.cases,
        anatomy=args.anatomy,
        seed=args.seed,
        split=args.split,
        config=SynthesisConfig(slice_thickness_mm=args.slice_thickness),
    )
    print(
        f"anatomy: {args.anatomy} (split {args.split}), seed {args.seed}, {time.perf_counter() - start:.0f} s"
    )
    print(stats.table())
    return 0 if all(stats.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
