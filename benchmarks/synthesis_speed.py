"""Time writing N synthetic cases (2.5 mm slices, 0.8 mm pixels) with K worker processes (issue 3).

Target: 100 cases in at most 10 minutes on a 2-core machine.

    python benchmarks/synthesis_speed.py --cases 100 --workers 2 [--anatomy DIR|procedural]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_ANATOMY = REPO.parent / "shared" / "data" / "anatomy"


def main(argv: list[str] | None = None) -> int:
    from PancreasAILib.synthesis.case import SynthesisConfig
    from PancreasAILib.synthesis.dataset import write_dataset

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slice-thickness", type=float, default=2.5)
    parser.add_argument(
        "--anatomy", default=str(DEFAULT_ANATOMY) if DEFAULT_ANATOMY.is_dir() else "procedural"
    )
    parser.add_argument("--keep", type=Path, help="write here and keep the dataset instead of a temp folder")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pancreasai-synth-speed-"))
    out = args.keep or tmp / "dataset"
    try:
        start = time.perf_counter()
        summary = write_dataset(
            out,
            anatomy=args.anatomy,
            n_cases=args.cases,
            seed=0,
            workers=args.workers,
            config=SynthesisConfig(slice_thickness_mm=args.slice_thickness),
            progress=True,
        )
        wall = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e9
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"anatomy: {args.anatomy}; slices {args.slice_thickness} mm, pixels 0.8 mm")
    print(f"cases: {len(summary.cases)} ({summary.tumours} tumours), workers: {args.workers}")
    print(f"wall: {wall:.1f} s, {wall / len(summary.cases):.2f} s/case, {size:.2f} GB written")
    print(f"target 100 cases <= 600 s: projected {100 * wall / len(summary.cases):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
