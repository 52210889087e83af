"""Does stage 1 miss a gland because the patient is small? Stage 1 on cases magnified by a factor.

    python benchmarks/stage1_scale_probe.py --data work_tmp/heldout24 --cases PANSYN_0006 PANSYN_0002 \
        --scales 1.0 1.25 1.4

Each case (a `pancreasai synth` dataset: imagesTr, labelsTr) is run through the registered stage-1
network as it is and with every distance multiplied by each `--scale` (voxel spacing and origin
scaled alike: a bigger patient with the same anatomy; `--axes xy` or `z` magnifies only in-plane or
only along the body axis). For each run it prints the Dice of stage 1's
largest component against the true gland (and the body's median axial diameter, from the
voxels above -500 HU of the venous phase on stage 1's grid), and over the head, body and tail (thirds of the true
gland from patient right to left) the mean stage-1 probability and the share inside that component.
Why: the AMOS held-out map is a small patient (its body about 0.75 of the BTCV bodies the networks
were trained on), and stage 1 finds almost none of its gland.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from PancreasAILib.cascade.grids import grid_for_box, image_box, resample_onto
    from PancreasAILib.cascade.runner import Cascade, largest_component
    from PancreasAILib.phases import PHASE_ORDER, Phase

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a `pancreasai synth` dataset")
    parser.add_argument("--cases", nargs="+", required=True, metavar="CASE")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.25, 1.4])
    parser.add_argument(
        "--axes", choices=("xyz", "xy", "z"), default="xyz", help="which axes to magnify (default all three)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cascade = Cascade.load("cpu")
    present = np.ones(len(PHASE_ORDER), bool)

    print(f"{'case':<12} {'scale':>5} {'body':>6} {'Dice':>5}   mean p / in component: head, body, tail")

    def magnified(image: sitk.Image, factors: list[float]) -> sitk.Image:
        out = sitk.Image(image)  # a copy: the case is read once for every scale
        out.SetSpacing([v * f for v, f in zip(image.GetSpacing(), factors, strict=True)])
        out.SetOrigin([v * f for v, f in zip(image.GetOrigin(), factors, strict=True)])
        return out

    for case in args.cases:
        read_images = {
            phase: sitk.ReadImage(str(args.data / "imagesTr" / f"{case}_{k:04d}.nii.gz"))
            for k, phase in enumerate(PHASE_ORDER)
        }
        read_truth = sitk.ReadImage(str(args.data / "labelsTr" / f"{case}.nii.gz"))
        for scale in args.scales:
            factors = [scale if axis in args.axes else 1.0 for axis in "xyz"]
            images = {phase: magnified(image, factors) for phase, image in read_images.items()}
            truth = magnified(read_truth, factors)
            grid = grid_for_box(image_box(images[Phase.VENOUS]), cascade.spec1.spacing)
            probability = cascade.stage1_probability(images, grid, present)
            body = resample_onto(images[Phase.VENOUS], grid, default=-1024.0) > -500
            area_mm2 = body.sum(axis=(1, 2)) * grid.GetSpacing()[0] * grid.GetSpacing()[1]
            body_mm = float(np.median(np.sqrt(4 * area_mm2[area_mm2 > 0] / np.pi)))
            gland = resample_onto(sitk.Cast(truth > 0, sitk.sitkFloat32), grid) >= 0.5
            found = largest_component(probability >= 0.5)
            dice = 2 * (found & gland).sum() / max(found.sum() + gland.sum(), 1)
            x = np.nonzero(gland)[2]  # LPS: x grows towards the patient's left, so the head comes first
            cuts = np.percentile(x, [100 / 3, 200 / 3])
            column = np.arange(gland.shape[2])[None, None, :]
            parts = [gland & (column < cuts[0]), gland & (column >= cuts[0]) & (column < cuts[1])]
            parts.append(gland & (column >= cuts[1]))
            cells = "  ".join(f"{probability[p].mean():.2f}/{found[p].mean():.2f}" for p in parts)
            print(f"{case:<12} {scale:>5.2f} {body_mm:>4.0f}mm {dice:>5.2f}   {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
