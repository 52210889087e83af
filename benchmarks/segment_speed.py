"""End-to-end speed and peak memory of `pancreasai segment` on a 3-phase 512x512x120 case, and a batch.

Target (DESIGN.md, issue 4): one case in at most 60 s wall with at most 4 GB peak memory on a 2-core
CPU. The case is synthesised from held-out anatomy (or procedural anatomy) and placed on an exact
512 x 512 x 120 grid (0.78 mm pixels, 2.5 mm slices) per phase, written as NIfTI. Each run is a
fresh `pancreasai` process (so model loading and imports count), timed by wall clock; peak memory
is the child's maximum resident set size. `--batch N` then runs N such cases through
`segment --batch` to show that the models are loaded once.

    python benchmarks/segment_speed.py [--batch 10] [--no-heatmap] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ANATOMY = REPO.parent / "shared" / "data" / "anatomy"
SHAPE_XYZ, SPACING = (512, 512, 120), (0.78, 0.78, 2.5)


def make_case(folder: Path, name: str, seed: int) -> None:
    """Three phases of one synthetic case on an exact 512x512x120 grid centred on the pancreas."""
    from PancreasAILib.phases import PHASE_ORDER
    from PancreasAILib.synthesis import SynthesisConfig, procedural_anatomy, synthesize_case
    from PancreasAILib.synthesis.dataset import anatomy_for_case, resolve_anatomy

    sources = resolve_anatomy(ANATOMY, "heldout") if ANATOMY.is_dir() else ["procedural"]
    anatomy = anatomy_for_case(sources, seed, 0) if sources != ["procedural"] else procedural_anatomy(seed)
    config = SynthesisConfig(spacing_mm=1.0, slice_thickness_mm=2.5, z_margin_mm=(110.0, 130.0))
    case = synthesize_case(anatomy, config, seed=seed)
    labels = sitk.GetArrayViewFromImage(case.labels)
    centre_index = np.argwhere(labels > 0).mean(axis=0)[::-1]
    centre = np.array(case.labels.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))
    grid = sitk.Image(SHAPE_XYZ, sitk.sitkInt16)
    grid.SetSpacing(SPACING)
    grid.SetOrigin(tuple(centre - (np.array(SHAPE_XYZ) - 1) / 2 * np.array(SPACING)))
    folder.mkdir(parents=True, exist_ok=True)
    for k, phase in enumerate(PHASE_ORDER):
        image = sitk.Resample(
            case.phases[phase], grid, sitk.Transform(), sitk.sitkLinear, -1024, sitk.sitkInt16
        )
        sitk.WriteImage(image, str(folder / f"{name}_{k:04d}.nii.gz"), useCompression=True)


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS of the child in GB, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak_kb, before) / 1024 / 1024, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=10, help="cases in the batch run (0: skip)")
    parser.add_argument("--heatmap", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="OMP/torch threads (0: all cores)")
    args = parser.parse_args(argv)
    exe = str(Path(sys.executable).with_name("pancreasai"))
    env_threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    os.environ.update(env_threads)
    flags = ["--device", args.device, "--heatmap" if args.heatmap else "--no-heatmap", "--progress", "none"]
    with tempfile.TemporaryDirectory(prefix="pancreasai-speed-") as tmp:
        root = Path(tmp)
        make_case(root / "one", "case", seed=11)
        phases = {
            p: str(root / "one" / f"case_{k:04d}.nii.gz")
            for k, p in enumerate(("arterial", "venous", "delayed"))
        }
        cmd = [
            exe,
            "segment",
            *[f"--{p}={path}" for p, path in phases.items()],
            "--out",
            str(root / "out"),
            *flags,
        ]
        wall, peak_gb, _ = timed(cmd)
        report = json.loads((root / "out" / "report.json").read_text())
        print(
            f"one 3-phase {SHAPE_XYZ[0]}x{SHAPE_XYZ[1]}x{SHAPE_XYZ[2]} case, fresh process: {wall:.1f} s wall, "
            f"peak memory {peak_gb:.2f} GB (targets: 60 s, 4 GB) on {os.cpu_count()} CPU cores"
        )
        print("stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()))
        print(
            f"status {report['segmentation_status']}, lesions {len(report['lesions'])}, "
            f"heatmap computed: {report['heatmap']['computed']}"
        )
        if args.batch:
            for i in range(args.batch):
                make_case(root / "batch" / "imagesTs", f"case{i:02d}", seed=100 + i)
            cmd = [exe, "segment", "--batch", str(root / "batch"), "--out", str(root / "preds"), *flags]
            wall, peak_gb, _ = timed(cmd)
            summary = json.loads((root / "preds" / "batch.json").read_text())
            per_case = [c["seconds"] for c in summary["cases"].values()]
            print(
                f"batch of {args.batch}: {wall:.1f} s wall ({wall / args.batch:.1f} s per case), models loaded once "
                f"in {summary['model_load_s']:.1f} s, per-case {min(per_case):.1f}-{max(per_case):.1f} s, "
                f"peak memory {peak_gb:.2f} GB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
