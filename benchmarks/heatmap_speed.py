"""Time the anomaly heatmap of one case (all pancreas slices of the ROI) on this CPU (issue 5).

Target: at most 15 s per case on a 2-core CPU. Two held-out synthetic cases are timed: the one of
median size (a typical case) and the one with the most pancreas slices (the slowest); each after
one warm-up. The network passes per slice are printed next to the reference's 2L (every timestep
encoded and decoded). Exit status 0 when the typical case meets the target.

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
    parser.add_argument("--noise-level", type=int, default=None, help="default: the calibrated L")
    parser.add_argument("--guidance", type=float, default=None, help="default: the calibrated S")
    parser.add_argument("--steps", type=int, default=None, help="default: the calibrated number of steps")
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
    order = np.argsort(n_slices)
    chosen = {"median-size": cases[int(order[len(order) // 2])], "largest": cases[int(order[-1])]}
    mask = np.array([c in args.phases for c in "avd"])
    start = time.perf_counter()
    model = AnomalyModel.load()
    load_s = time.perf_counter() - start
    kwargs = dict(noise_level=args.noise_level, guidance=args.guidance, steps=args.steps)
    medians = []
    for label, case in chosen.items():
        model.heatmap(case.roi_hu, mask, case.labels > 0, spacing, **kwargs)  # warm-up
        times = []
        for _ in range(args.repeats):
            result = model.heatmap(case.roi_hu, mask, case.labels > 0, spacing, **kwargs)
            times.append(result.seconds)
        medians.append(float(np.median(times)))
        print(
            f"{label} case of {len(cases)} held-out: {case.meta['anatomy']} ROI {tuple(case.roi_hu.shape[1:])} "
            f"(Z, Y, X) at 3 x 1.5 x 1.5 mm, {result.slices} pancreas slices: median {medians[-1]:.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in times)}); target <= 15 s"
        )
    st = result.settings
    steps = st["steps"]
    reference = 2 * st["noise_level"]
    print(
        f"settings: L={st['noise_level']} S={st['guidance']:g} steps={steps} phases={args.phases} "
        f"threads={args.threads}; model load {load_s:.2f} s (once per session)"
    )
    print(
        f"network passes per slice: {result.passes_per_slice} ({steps} encode + {steps} decode denoiser passes + "
        f"{result.passes_per_slice - 2 * steps} classifier gradients) vs reference 2L = {reference} "
        f"({reference / result.passes_per_slice:.0f}x fewer)"
    )
    print(
        f"machine load average while timing: {', '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}"
    )
    return 0 if medians[0] <= 15.0 else 1


if __name__ == "__main__":
    sys.exit(main())
