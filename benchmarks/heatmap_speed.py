"""Time the anomaly heatmap of one case (all pancreas slices of the ROI) on this CPU (issue 5).

Target: at most 15 s per case on a 2-core CPU. The case is the held-out synthetic case with the
most pancreas slices (the slowest); each run is timed after one warm-up, and the network passes
per slice are printed next to the reference's 2L (every timestep encoded and decoded).

    python benchmarks/heatmap_speed.py [--threads 1] [--noise-level 250 --guidance 8 --steps 10]
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
    import numpy as np
    import torch

    from PancreasAILib.anomaly import AnomalyModel
    from PancreasAILib.anomaly.preprocess import dilate_mm
    from PancreasAILib.training.anomaly_data import CacheSpec, build_cache, list_cases, load_cached_case

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--anatomy", type=Path, default=DEFAULT_ANATOMY)
    parser.add_argument("--cache", type=Path, default=REPO / "work_tmp" / "anomaly" / "cache" / "heldout")
    parser.add_argument("--cases", type=int, default=14, help="held-out cases to choose the largest from")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise-level", type=int, default=250)
    parser.add_argument("--guidance", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--phases", default="avd", help="phases given, e.g. v for venous only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    build_cache(
        CacheSpec(str(args.anatomy), "heldout", args.cases, seed=1001, dr_fraction=0.0, p_tumour=1.0),
        args.cache,
    )
    cases = [load_cached_case(p) for p in list_cases(args.cache)[: args.cases]]
    spacing = (3.0, 1.5, 1.5)
    n_slices = [int(dilate_mm(c.labels > 0, spacing, 6.0).any(axis=(1, 2)).sum()) for c in cases]
    case = cases[int(np.argmax(n_slices))]
    mask = np.array([c in args.phases for c in "avd"])
    start = time.perf_counter()
    model = AnomalyModel.load()
    load_s = time.perf_counter() - start
    kwargs = dict(noise_level=args.noise_level, guidance=args.guidance, steps=args.steps)
    model.heatmap(case.roi_hu, mask, case.labels > 0, spacing, **kwargs)  # warm-up
    times = []
    for _ in range(args.repeats):
        result = model.heatmap(case.roi_hu, mask, case.labels > 0, spacing, **kwargs)
        times.append(result.seconds)
    reference = 2 * args.noise_level
    print(
        f"case: {case.meta['anatomy']} ROI {tuple(case.roi_hu.shape[1:])} (Z, Y, X) at 3 x 1.5 x 1.5 mm, "
        f"{result.slices} pancreas slices (largest of {len(cases)} held-out cases; median "
        f"{int(np.median(n_slices))})"
    )
    print(
        f"settings: L={args.noise_level} S={args.guidance:g} steps={args.steps} phases={args.phases} "
        f"threads={args.threads}; model load {load_s:.2f} s (once per session)"
    )
    print(
        f"heatmap seconds per case: median {np.median(times):.2f} s (runs: "
        f"{', '.join(f'{t:.2f}' for t in times)}); target <= 15 s"
    )
    print(
        f"network passes per slice: {result.passes_per_slice} ({args.steps} encode + {args.steps} decode "
        f"denoiser passes + {result.passes_per_slice - 2 * args.steps} classifier gradients) "
        f"vs reference 2L = {reference} ({reference / result.passes_per_slice:.0f}x fewer)"
    )
    return 0 if np.median(times) <= 15.0 else 1


if __name__ == "__main__":
    sys.exit(main())
