"""Which stage makes the false lesions at lower contrast: stage 1 (the prior and box) or stage 2?

    python benchmarks/intensity_shift.py --data work_tmp/calib30 --out work_tmp/calib30_kv140 --factor 0.75
    python benchmarks/contrast_stage_swap.py --data work_tmp/calib30 --shifted work_tmp/calib30_kv140

Every case is run three times by the shipped cascade (`PANCREASAI_MODELS` for another model folder):
both stages on the scan as made, both on the shifted copy, and stage 1 on the scan as made with stage 2
on the shifted copy. Why: at x0.75 contrast every healthy calibration gland gets a strong lesion,
and two stage-2 candidates trained for contrast did not change that (model card, session 17); if the
swap row looks like the first, stage 1 is what moves, if like the second, stage 2. The phases are
resampled onto the venous grid without registration (the same for all three runs), so the figures
are for this comparison only. Prints, per run, the healthy glands with a lesion >= 0.5, their
strongest lesion, and the tumour Dice of the cases with tumour.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PancreasAILib.cascade.runner import Cascade  # noqa: E402
from PancreasAILib.geometry import resample_to_reference  # noqa: E402
from PancreasAILib.phases import PHASE_ORDER, Phase  # noqa: E402


def load_phases(data: Path, case: str) -> dict[Phase, sitk.Image]:
    venous = sitk.ReadImage(str(data / "imagesTr" / f"{case}_0001.nii.gz"), sitk.sitkFloat32)
    images = {}
    for k, phase in enumerate(PHASE_ORDER):
        image = sitk.ReadImage(str(data / "imagesTr" / f"{case}_{k:04d}.nii.gz"), sitk.sitkFloat32)
        images[phase] = resample_to_reference(image, venous, default_value=-1024.0)
    return images


def stage1_reading(stage1, images: dict[Phase, sitk.Image]):
    """The cascade's stage 1, made to read `images` whatever the cascade hands it."""

    def probability(_handed, grid, mask, scales=None):
        return stage1(images, grid, mask, scales)

    return probability


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="nnU-Net-raw synthetic dataset as made")
    parser.add_argument("--shifted", type=Path, required=True, help="its copy from intensity_shift.py")
    parser.add_argument("--cases", type=int, help="only the first N cases")
    parser.add_argument("--healthy-only", action="store_true", help="skip the cases with tumour (faster)")
    args = parser.parse_args(argv)
    cascade = Cascade.load("cpu")
    stage1 = cascade.stage1_probability
    names = sorted(p.stem for p in (args.data / "cases").glob("*.json"))[: args.cases]
    runs = {
        "both as made": ("data", "data"),
        "both shifted": ("shifted", "shifted"),
        "stage 1 as made, stage 2 shifted": ("data", "shifted"),
    }
    rows: dict[str, dict[str, list[float]]] = {run: {"healthy_top": [], "tumour_dice": []} for run in runs}
    for name in names:
        has_tumour = bool(json.loads((args.data / "cases" / f"{name}.json").read_text())["tumours"])
        if has_tumour and args.healthy_only:
            continue
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(args.data / "labelsTr" / f"{name}.nii.gz")))
        images = {"data": load_phases(args.data, name), "shifted": load_phases(args.shifted, name)}
        for run, (first, second) in runs.items():
            # Stage 1 reads `first` whatever the cascade hands it; everything after reads `second`.
            cascade.stage1_probability = stage1_reading(stage1, images[first])
            result = cascade.run(images[second], images[second][Phase.VENOUS])
            if has_tumour:
                found = sitk.GetArrayFromImage(result.labels) == 2
                rows[run]["tumour_dice"].append(dice(found, truth == 2))
            else:
                rows[run]["healthy_top"].append(max((les.confidence for les in result.lesions), default=0.0))
        print(f"{name} done", flush=True)
    cascade.stage1_probability = stage1
    counted = len(rows["both as made"]["healthy_top"]) + len(rows["both as made"]["tumour_dice"])
    print(f"{counted} cases; three phases, no registration")
    print(
        f"{'run':36s} {'healthy with a lesion >= 0.5':>30s} {'mean strongest (healthy)':>26s} {'tumour Dice':>12s}"
    )
    for run, row in rows.items():
        top = np.array(row["healthy_top"])
        print(
            f"{run:36s} {f'{int((top >= 0.5).sum())} of {len(top)}':>30s} {top.mean():>26.2f} "
            f"{np.mean(row['tumour_dice']) if row['tumour_dice'] else float('nan'):>12.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
