"""How much of the gland lies beside the duodenum, and how much of that part the cascade finds.

    python benchmarks/duodenum_adjacency.py --data work_tmp/heldout24 \
        --pred work_tmp/ablation_ens/arterial+venous+delayed [--cases PANSYN_0000 PANSYN_0006]

Each synthetic case is made again from its dataset's recorded seed and configuration, this time
keeping the organ map (the generator is deterministic; the script checks that the labels come out
identical). For each case it prints the share of the true gland within `--within` mm of the
duodenal wall, the gland recall of the prediction there and beyond, and the duodenum's median
venous HU. Why: on the AMOS held-out map stage 1 missed the head, which the real duodenum hugs,
while the C-loop that `synthesis/completion.add_duodenum` drew for the BTCV maps until session 8
lay further out (now it is placed against the head).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from PancreasAILib.phases import Phase
    from PancreasAILib.synthesis.anatomy import Organ
    from PancreasAILib.synthesis.dataset import remake_case

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a `pancreasai synth` dataset")
    parser.add_argument("--pred", type=Path, required=True, help="`segment --batch` output on it")
    parser.add_argument("--cases", nargs="+", help="case names (default: all)")
    parser.add_argument("--within", type=float, default=15.0, help="mm from the duodenal wall (default 15)")
    parser.add_argument("--anatomy", type=Path, help="anatomy folder (default: the one the dataset records)")
    args = parser.parse_args(argv)

    names = args.cases or sorted(p.stem for p in (args.data / "cases").glob("*.json"))
    print(
        f"case         anatomy            gland within {args.within:.0f} mm   recall there   beyond   duodenum HU"
    )
    for name in names:
        meta = json.loads((args.data / "cases" / f"{name}.json").read_text())
        case = remake_case(args.data, name, anatomy=args.anatomy)  # checks the labels come out identical
        truth = sitk.GetArrayFromImage(case.labels)
        organs = sitk.GetArrayFromImage(case.organs)
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(args.pred / name / "labels.nii.gz"))) > 0
        gland = truth > 0
        distance = ndi.distance_transform_edt(
            organs != Organ.DUODENUM, sampling=case.labels.GetSpacing()[::-1]
        )
        near, far = gland & (distance <= args.within), gland & (distance > args.within)
        venous = sitk.GetArrayFromImage(case.phases[Phase.VENOUS])
        print(
            f"{name}  {meta['anatomy']:18s} {near.sum() / gland.sum():16.0%}"
            f"   {(near & predicted).sum() / max(near.sum(), 1):12.2f}   {(far & predicted).sum() / max(far.sum(), 1):6.2f}"
            f"   {np.median(venous[organs == Organ.DUODENUM]):11.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
