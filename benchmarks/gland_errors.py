"""Where the pancreas Dice is lost: per case, the Dice, the ceiling set by the stage-2 grid, the
predicted and true volumes, and how far outside the truth the false gland lies.

    python benchmarks/gland_errors.py --data work_tmp/heldout24 --pred work_tmp/ablation2/arterial+venous+delayed

--data is an nnU-Net-raw dataset made by `pancreasai synth` (labelsTr/, cases/<case>.json naming the
anatomy map); --pred holds `pancreasai segment --batch` outputs (<case>/labels.nii.gz).

`--tissues` also makes each case again with its full organ map (`synthesis.dataset.remake_case`) and
says which tissue the false gland is (mL per tissue, and the venous HU of the gland and of the vein
labelled gland), with the totals over all cases: what session 13's bright-vessel step was built on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGE2_SPACING = (2.0, 2.0, 3.0)  # x, y, z (mm): the tumour network's grid


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def grid_ceiling(truth: sitk.Image) -> float:
    """Dice of the truth after a round trip through the stage-2 grid (linear, threshold 0.5)."""
    mask = sitk.Cast(truth > 0, sitk.sitkFloat32)
    size = [
        round(n * s / t) for n, s, t in zip(truth.GetSize(), truth.GetSpacing(), STAGE2_SPACING, strict=True)
    ]
    low = sitk.Resample(
        mask, size, sitk.Transform(), sitk.sitkLinear, truth.GetOrigin(), STAGE2_SPACING, truth.GetDirection()
    )
    back = sitk.GetArrayFromImage(sitk.Resample(low, truth, sitk.Transform(), sitk.sitkLinear)) > 0.5
    return dice(back, sitk.GetArrayFromImage(truth) > 0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--tissues", action="store_true", help="name the tissue of the false gland")
    args = parser.parse_args()
    tissue_totals: Counter = Counter()
    print(
        "case          anatomy              Dice  ceiling  true mL  pred mL  FP mL  FP dist mm (median, 95%)"
    )
    rows = []
    for label_file in sorted((args.data / "labelsTr").glob("*.nii.gz")):
        case = label_file.name.removesuffix(".nii.gz")
        pred_file = args.pred / case / "labels.nii.gz"
        if not pred_file.is_file():
            continue
        truth_image = sitk.ReadImage(str(label_file))
        truth = sitk.GetArrayFromImage(truth_image) > 0
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_file))) > 0
        spacing = truth_image.GetSpacing()[::-1]
        ml = float(np.prod(spacing)) / 1000.0
        false_gland = pred & ~truth
        distance = ndi.distance_transform_edt(~truth, sampling=spacing)[false_gland]
        meta_file = args.data / "cases" / f"{case}.json"
        anatomy = json.loads(meta_file.read_text()).get("anatomy", "?") if meta_file.is_file() else "?"
        row = (dice(pred, truth), grid_ceiling(truth_image), truth.sum() * ml, pred.sum() * ml)
        rows.append(row)
        spread = f"{np.median(distance):.1f}, {np.percentile(distance, 95):.1f}" if distance.size else "-"
        print(
            f"{case:13} {anatomy:20} {row[0]:.3f}  {row[1]:.3f}  {row[2]:7.0f}  {row[3]:7.0f}  "
            f"{false_gland.sum() * ml:5.1f}  {spread}"
        )
        if args.tissues:
            print("    " + false_tissues(args.data, case, false_gland, ml, tissue_totals))
    if rows:
        mean = np.mean(rows, axis=0)
        print(
            f"mean over {len(rows)} cases: Dice {mean[0]:.3f}, ceiling {mean[1]:.3f}, true {mean[2]:.0f} mL, "
            f"predicted {mean[3]:.0f} mL"
        )
    if tissue_totals:
        print(
            "false gland by tissue, all cases (mL): "
            + ", ".join(f"{k} {v:.0f}" for k, v in tissue_totals.most_common(8))
        )
    return 0


def false_tissues(data: Path, case: str, false_gland: np.ndarray, ml: float, totals: Counter) -> str:
    """The tissue of the false gland (top four, mL) and the venous HU of the gland and of the vein in it."""
    from PancreasAILib.phases import Phase
    from PancreasAILib.synthesis.anatomy import Organ
    from PancreasAILib.synthesis.dataset import remake_case

    remade = remake_case(data, case)
    organs = sitk.GetArrayFromImage(remade.organs)
    counts = Counter(Organ(int(v)).name.lower() for v in organs[false_gland])
    for name, n in counts.items():
        totals[name] += n * ml
    words = ", ".join(f"{name} {n * ml:.1f}" for name, n in counts.most_common(4))
    if Phase.VENOUS in remade.phases:
        venous = sitk.GetArrayFromImage(remade.phases[Phase.VENOUS])
        vein = false_gland & (organs == Organ.PORTAL_SPLENIC_VEIN)
        gland_hu = np.median(venous[np.isin(organs, [Organ.PANCREAS, Organ.PANCREATIC_DUCT])])
        words += f"; venous HU: gland {gland_hu:.0f}" + (
            f", vein in it {np.median(venous[vein]):.0f}" if vein.any() else ""
        )
    return words


if __name__ == "__main__":
    raise SystemExit(main())
