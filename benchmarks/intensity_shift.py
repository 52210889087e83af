"""Make a copy of a synthetic dataset under another plausible intensity model: contrast scaled.

    python benchmarks/intensity_shift.py --data work_tmp/heldout24 --out work_tmp/heldout24_kv80 --factor 1.3
    python benchmarks/phase_ablation.py --data work_tmp/heldout24_kv80 --out work_tmp/held_kv80 \
        --subsets arterial,venous,delayed venous --jobs 2

Every voxel of the body (above -500 HU) is scaled about 40 HU (soft tissue) by `--factor`, in every
phase; air stays. Why: the models are judged on intensity models they never saw, and the nearest
real one is another tube voltage: at 80 kVp iodine-enhanced tissue is about 1.3 to 1.5 times as
bright as at 120 kVp, and fat a little darker. This is cruder than physics (native tissue is
scaled too) but shows whether the networks follow contrast or a fixed HU table; the generator's
SynthSeg-like random intensities (`pancreasai synth --domain-randomise`) are the harsh end of the
same question. Labels, case records and dataset.json are copied unchanged.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SOFT_TISSUE_HU = 40.0
BODY_HU = -500.0


def scaled(image: sitk.Image, factor: float) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    body = array > BODY_HU
    array[body] = SOFT_TISSUE_HU + (array[body] - SOFT_TISSUE_HU) * factor
    out = sitk.GetImageFromArray(np.clip(np.round(array), -1024, 3071).astype(np.int16))
    out.CopyInformation(image)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="nnU-Net-raw synthetic dataset")
    parser.add_argument("--out", type=Path, required=True, help="a new folder")
    parser.add_argument("--factor", type=float, required=True, help="contrast scale about 40 HU, e.g. 1.3")
    args = parser.parse_args(argv)
    if not 0.2 <= args.factor <= 5.0:
        parser.error("--factor must lie in [0.2, 5]")
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new folder")
    partial = args.out.with_name(args.out.name + ".partial")  # renamed when complete
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "imagesTr").mkdir(parents=True)
    for folder in ("labelsTr", "cases"):
        if (args.data / folder).is_dir():
            shutil.copytree(args.data / folder, partial / folder)
    shutil.copyfile(args.data / "dataset.json", partial / "dataset.json")
    images = sorted((args.data / "imagesTr").glob("*.nii.gz"))
    for path in images:
        sitk.WriteImage(
            scaled(sitk.ReadImage(str(path)), args.factor), str(partial / "imagesTr" / path.name), True
        )
    partial.rename(args.out)
    print(f"wrote {len(images)} images with contrast x{args.factor:g} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
