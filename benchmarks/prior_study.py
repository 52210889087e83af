"""What limits the gland Dice: stage 1's prior, stage 2, or the decision rule? (issue 4)

Runs the cascade on an nnU-Net-raw dataset (imagesTr: _0000 arterial, _0001 venous, _0002 delayed;
labelsTr) in one of three modes, keeps stage 2's class probabilities on the reference grid, and
scores the gland and tumour Dice for several decision thresholds besides the shipped argmax:

- `shipped`: the cascade as `pancreasai segment` runs it;
- `refine`: stage 2 run a second time with its own gland probability as the prior (is a sharper
  prior than stage 1's enough?);
- `oracle`: stage 1 replaced by the true gland resampled onto stage 1's 4 x 4 x 6 mm grid (the
  best any stage-1 model could give at that resolution: the ceiling on what improving it can buy).

    python benchmarks/prior_study.py --data work_tmp/calib20 --out work_tmp/prior_study --mode oracle

Probabilities are stored per case (`<out>/<mode>/<case>.npz`), so a rerun only scores. Use the
training-anatomy calibration cases for decisions; held-out cases only to report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GLAND_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TUMOUR_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def patch_cascade(mode: str, captured: dict, truth: dict) -> None:
    """Instrument the runner: record the class probabilities; swap the prior for `refine` / `oracle`."""
    import numpy as np
    import SimpleITK as sitk

    import PancreasAILib.cascade.runner as runner

    to_reference = runner.roi_to_reference

    def recording(probs, roi, reference, restrict):
        moved = [
            sitk.GetArrayFromImage(
                runner.paste_roi(runner.array_to_grid(p.astype(np.float32), roi), reference, linear=True)
            )
            for p in probs[1:]
        ]
        captured["p"] = np.stack(moved).astype(np.float16)  # pancreas, tumour
        return to_reference(probs, roi, reference, restrict)

    runner.roi_to_reference = recording
    if mode == "refine":
        predict = runner.predict_stage2

        def twice(net, image, prior, mask, patch, device, mirror=False):
            probs, pdac = predict(net, image, prior, mask, patch, device, mirror=mirror)
            gland = (probs[1] + probs[2]).astype(prior.dtype)
            return predict(net, image, gland, mask, patch, device, mirror=mirror)[0], pdac

        runner.predict_stage2 = twice
    elif mode == "oracle":

        def true_gland(self, images, grid, mask):
            gland = sitk.Cast(sitk.ReadImage(truth["path"]) > 0, sitk.sitkFloat32)
            moved = sitk.Resample(gland, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            return sitk.GetArrayFromImage(moved)

        runner.Cascade.stage1_probability = true_gland


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import SimpleITK as sitk

    from PancreasAILib.cli.main import main as pancreasai
    from PancreasAILib.evaluation.overlap import dice_score as dice

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=("shipped", "refine", "oracle"), default="shipped")
    args = parser.parse_args(argv)
    out = args.out / args.mode
    out.mkdir(parents=True, exist_ok=True)
    captured: dict = {}
    truth: dict = {}
    patch_cascade(args.mode, captured, truth)
    cases = sorted(p.name[: -len(".nii.gz")] for p in (args.data / "labelsTr").glob("*.nii.gz"))
    for case in cases:
        if (out / f"{case}.npz").exists():
            continue
        captured.clear()
        truth["path"] = str(args.data / "labelsTr" / f"{case}.nii.gz")
        images = [str(args.data / "imagesTr" / f"{case}_000{k}.nii.gz") for k in range(3)]
        command = ["segment", "--arterial", images[0], "--venous", images[1], "--delayed", images[2]]
        code = pancreasai([*command, "--out", str(out / case), "--no-heatmap", "--progress", "none"])
        if "p" in captured:
            np.savez_compressed(out / f"{case}.npz", p=captured["p"])
        else:
            print(f"{case}: no stage-2 output (exit status {code})")

    gland_dice = {t: [] for t in GLAND_THRESHOLDS}
    tumour_dice = {u: [] for u in TUMOUR_THRESHOLDS}
    argmax_gland, argmax_tumour, ratio = [], [], []
    for path in sorted(out.glob("*.npz")):
        probs = np.load(path)["p"].astype(np.float32)
        truth_map = sitk.GetArrayFromImage(
            sitk.ReadImage(str(args.data / "labelsTr" / f"{path.stem}.nii.gz"))
        )
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / path.stem / "labels.nii.gz")))
        gland = probs.sum(0)
        for t in GLAND_THRESHOLDS:
            gland_dice[t].append(dice(gland >= t, truth_map > 0))
        argmax_gland.append(dice(labels > 0, truth_map > 0))
        ratio.append((labels > 0).sum() / max((truth_map > 0).sum(), 1))
        if (truth_map == 2).any():
            argmax_tumour.append(dice(labels == 2, truth_map == 2))
            for u in TUMOUR_THRESHOLDS:
                tumour_dice[u].append(dice((probs[1] >= u) & (gland >= 0.5), truth_map == 2))
    print(
        f"{args.mode}: {len(ratio)} cases of {args.data}; predicted / true gland volume median "
        f"{np.median(ratio):.2f}"
    )
    print(f"gland Dice   shipped labels {np.mean(argmax_gland):.3f}; p(gland) >= t:", end="")
    print("".join(f"  {t}: {np.mean(v):.3f}" for t, v in gland_dice.items()))
    print(f"tumour Dice  shipped labels {np.mean(argmax_tumour):.3f}; p(tumour) >= u:", end="")
    print("".join(f"  {u}: {np.mean(v):.3f}" for u, v in tumour_dice.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
