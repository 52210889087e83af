"""Which property of a label map makes stage 1 miss its gland? Edit the map, synthesise, probe stage 1.

    python benchmarks/amos_map_variants.py --out work_tmp/map_variants

Each variant is a copy of one real label map with one property changed; three tumour-free cases are
synthesised from it with the same seed (`pancreasai synth --split all --cases 3 --seed 5
--p-tumour 0`) and run through the registered stage 1 by `benchmarks/stage1_scale_probe.py`:

- amos: AMOS 0013 as it is (the held-out map whose gland stage 1 misses);
- amos-thick: its gland grown by about 1.6 mm in-plane into unlabelled voxels;
- amos-no-duodenum: its real duodenum removed, so `completion.add_duodenum` draws one as for BTCV;
- amos-2mm: resampled to 2 mm isotropic (nearest label), the resolution of the BTCV maps;
- btcv: BTCV 0027 (held-out) as it is;
- btcv-no-portal: its portal and splenic vein removed, so completion draws them as for AMOS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
AMOS = "amos/amos_0013_label.nii.gz"
BTCV = "btcv_l2r/0027.nii.gz"
AMOS_PANCREAS, AMOS_DUODENUM, BTCV_PORTAL = 10, 13, 10


def _thicken(labels: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[-2:3, -2:3]
    disc = (yy**2 + xx**2 <= 5)[None]
    grown = ndi.binary_dilation(labels == AMOS_PANCREAS, disc)
    return np.where(grown & (labels == 0), AMOS_PANCREAS, labels)


def _remove(label: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda labels: np.where(labels == label, 0, labels)


def _resample_2mm(image: sitk.Image) -> sitk.Image:
    size = [round(n * s / 2.0) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkNearestNeighbor, image.GetOrigin(), (2.0,) * 3,
        image.GetDirection(), 0, image.GetPixelID(),
    )  # fmt: skip


VARIANTS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray] | None, bool]] = {
    "amos": (AMOS, None, False),
    "amos-thick": (AMOS, _thicken, False),
    "amos-no-duodenum": (AMOS, _remove(AMOS_DUODENUM), False),
    "amos-2mm": (AMOS, None, True),
    "btcv": (BTCV, None, False),
    "btcv-no-portal": (BTCV, _remove(BTCV_PORTAL), False),
}


def write_variant(anatomy: Path, name: str, folder: Path) -> None:
    source, edit, to_2mm = VARIANTS[name]
    image = sitk.ReadImage(str(anatomy / source))
    if edit is not None:
        edited = sitk.GetImageFromArray(edit(sitk.GetArrayFromImage(image)))
        edited.CopyInformation(image)
        image = edited
    if to_2mm:
        image = _resample_2mm(image)
    target = folder / source  # keeps the scheme folder (amos/, btcv_l2r/) that names the labels
    target.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--anatomy", type=Path, default=REPO.parent / "shared" / "data" / "anatomy")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    exe = str(Path(sys.executable).with_name("pancreasai"))
    for name in args.variants:
        maps, data = args.out / name / "map", args.out / name / "cases"
        if not (data / "dataset.json").is_file():
            write_variant(args.anatomy, name, maps)
            synth = [exe, "synth", "--anatomy", str(maps), "--split", "all", "--cases", "3", "--seed", "5"]
            synth += ["--p-tumour", "0", "--out", str(data)]
            subprocess.run(synth, check=True, capture_output=True)
        probe = [sys.executable, str(REPO / "benchmarks" / "stage1_scale_probe.py"), "--data", str(data)]
        probe += ["--cases", "PANSYN_0000", "PANSYN_0001", "PANSYN_0002", "--scales", "1.0"]
        lines = subprocess.run(probe, check=True, capture_output=True, text=True).stdout.splitlines()
        for line in lines[1:]:
            print(f"{name:<17} {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
