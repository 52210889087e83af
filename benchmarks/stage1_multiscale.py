"""Which test-time magnifications should stage 1 average? Stage-1 Dice per set of scales.

    python benchmarks/stage1_multiscale.py --data work_tmp/calib20 --scales 1.0 1.2 1.4 \
        --sets 1.0 1.0,1.2 1.0,1.4 1.0,1.2,1.4

Runs the registered stage 1 once per scale on every case of a `pancreasai synth` dataset (all
three phases, or `--phases`), with the scan magnified by that scale (`Cascade.stage1_probability`),
and scores each `--sets` entry (the average of its scales' probabilities, as inference averages
them) by the Dice of the largest component at 0.5 against the true gland on stage 1's grid, and
by how many cases fall under the cascade's "no pancreas" volume. `--body-scale 0.8` shrinks every
case first (spacing and origin multiplied alike): a smaller patient with the same anatomy, as the
BTCV maps are large adults. Choose the set on cases from the training maps (`--split train` data)
and procedural bodies; report held-out cases only once it is chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from PancreasAILib.cascade.grids import grid_for_box, image_box, resample_onto
    from PancreasAILib.cascade.runner import MIN_PANCREAS_ML, Cascade, largest_component
    from PancreasAILib.cli.segment import parse_phases
    from PancreasAILib.phases import PHASE_ORDER

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a `pancreasai synth` dataset")
    parser.add_argument("--cases", nargs="*", metavar="CASE", help="default: every case")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.2, 1.4])
    parser.add_argument(
        "--sets", nargs="+", default=["1.0", "1.0,1.2", "1.0,1.4", "1.0,1.2,1.4"], metavar="S1,S2"
    )
    parser.add_argument("--phases", default="arterial,venous,delayed")
    parser.add_argument("--body-scale", type=float, default=1.0, help="shrink (< 1) or grow every case")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = [tuple(float(v) for v in entry.split(",")) for entry in args.sets]
    unknown = {s for entry in sets for s in entry} - set(args.scales)
    if unknown:
        parser.error(f"--sets use scales not in --scales: {sorted(unknown)}")
    phases = parse_phases(args.phases)
    present = np.array([p in phases for p in PHASE_ORDER])
    cascade = Cascade.load("cpu")
    cases = args.cases or sorted(p.name[: -len(".nii.gz")] for p in (args.data / "labelsTr").glob("*.nii.gz"))

    def read(path: Path) -> sitk.Image:
        image = sitk.ReadImage(str(path))
        image.SetSpacing([v * args.body_scale for v in image.GetSpacing()])
        image.SetOrigin([v * args.body_scale for v in image.GetOrigin()])
        return image

    dice: dict[tuple[float, ...], list[float]] = {entry: [] for entry in sets}
    missed: dict[tuple[float, ...], int] = {entry: 0 for entry in sets}
    seconds: dict[float, float] = dict.fromkeys(args.scales, 0.0)
    print(f"{'case':<12} " + " ".join(f"{','.join(map(str, entry)):>13}" for entry in sets), flush=True)
    for case in cases:
        images = {
            phase: read(args.data / "imagesTr" / f"{case}_{PHASE_ORDER.index(phase):04d}.nii.gz")
            for phase in phases
        }
        truth = read(args.data / "labelsTr" / f"{case}.nii.gz")
        grid = grid_for_box(image_box(images[next(iter(images))]), cascade.spec1.spacing)
        gland = resample_onto(sitk.Cast(truth > 0, sitk.sitkFloat32), grid) >= 0.5
        by_scale = {}
        for scale in args.scales:
            start = time.perf_counter()
            by_scale[scale] = cascade.stage1_probability(images, grid, present, scales=(scale,))
            seconds[scale] += time.perf_counter() - start
        voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
        cells = []
        for entry in sets:
            found = largest_component(np.mean([by_scale[s] for s in entry], axis=0) >= 0.5)
            score = 2 * (found & gland).sum() / max(found.sum() + gland.sum(), 1)
            dice[entry].append(float(score))
            missed[entry] += int(found.sum() * voxel_ml < MIN_PANCREAS_ML)
            cells.append(f"{score:>13.3f}")
        print(f"{case:<12} " + " ".join(cells), flush=True)
    print(f"{'mean':<12} " + " ".join(f"{np.mean(dice[entry]):>13.3f}" for entry in sets))
    print(f"{'median':<12} " + " ".join(f"{np.median(dice[entry]):>13.3f}" for entry in sets))
    print(f"{'no pancreas':<12} " + " ".join(f"{missed[entry]:>13d}" for entry in sets))
    print(
        "seconds per case and scale: " + ", ".join(f"{s}: {t / len(cases):.2f}" for s, t in seconds.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
