"""A stand-in for `python -m PancreasAILib.cli.main` that needs no model: same arguments, same outputs.

`segment` writes its output folder with the engine's real writer (`write_case_outputs`), so the files,
names and report schema are the contract's own; only the "prediction" is a fixed pair of boxes.
`inspect --json` names each file's phase from its mean intensity (the tests make phases with distinct
means). FAKE_ENGINE_MODE picks a behaviour: ok (default), slow (for cancelling), crash (killed by a
signal), error (the engine's error format, exit 3), wronggrid (labels on another grid), noheatmap.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.export import Lesion, Report, summarize_heatmap, write_case_outputs
from PancreasAILib.export.report import ModelInfo
from PancreasAILib.phases import Phase
from PancreasAILib.progress import JsonLinesProgress

STAGES = ("load", "align", "stage1", "stage2", "heatmap", "lesions", "outputs")


def inspect(paths: list[Path]) -> int:
    series = []
    for path in paths:
        mean = float(
            np.mean(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
        )  # a copy: the image is temporary
        phase = "arterial" if mean < 150 else "venous" if mean < 250 else "delayed"
        series.append(
            {
                "series": {"kind": "file", "name": path.name},
                "identification": {"phase": phase, "confidence": 0.9, "evidence": [f"mean {mean:.0f}"]},
            }
        )
    print(json.dumps({"series": series, "case": {}}, indent=2))
    return 0


def fake_prediction(reference: sitk.Image) -> sitk.Image:
    size = reference.GetSize()
    labels = np.zeros(size[::-1], dtype=np.uint8)
    k, j, i = (s // 2 for s in size[::-1])
    labels[k - 2 : k + 2, j - 4 : j + 4, i - 6 : i + 6] = 1
    labels[k - 1 : k + 1, j - 1 : j + 2, i - 2 : i + 2] = 2
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    return image


def segment(args: argparse.Namespace, mode: str) -> int:
    progress = JsonLinesProgress()
    phases = {p: getattr(args, p) for p in ("arterial", "venous", "delayed") if getattr(args, p)}
    reference_phase = next(p for p in ("venous", "arterial", "delayed") if p in phases)
    for n, stage in enumerate(STAGES):
        progress(stage, 0.0, f"{stage} started")
        if mode == "slow":
            time.sleep(30)
        if mode == "crash" and n == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "error" and n == 0:
            print(
                "pancreasai segment: error: The venous image is empty.\n  fix: Load a CT volume.",
                file=sys.stderr,
            )
            return 3
        progress(stage, 1.0, f"{stage} done")
    reference = sitk.ReadImage(str(phases[reference_phase]))
    labels = fake_prediction(reference)
    grid = reference
    if mode == "wronggrid":
        grid = sitk.Image(reference)
        grid.SetOrigin([v + 7.0 for v in reference.GetOrigin()])
        labels.CopyInformation(grid)
    heatmap = None
    if mode != "noheatmap" and args.heatmap:
        heatmap = sitk.Cast(labels, sitk.sitkFloat32) * 0.4
    tumour = np.argwhere(sitk.GetArrayViewFromImage(labels) == 2).mean(axis=0)[::-1]
    centroid = labels.TransformContinuousIndexToPhysicalPoint([float(v) for v in tumour])
    report = Report(
        reference_phase=reference_phase,
        segmentation_status="done",
        pdac_likelihood=0.83,
        lesions=[
            Lesion(1, 0.91, 0.05, 4.2, tuple(centroid), 0.91, {reference_phase: -22.4}, hypoattenuating=True)
        ],
        heatmap=summarize_heatmap(heatmap, labels),
        models=[  # a two-member stage-1 ensemble lists each member, as the engine does
            ModelInfo("stage1_pancreas", "0.1.0+s2000+s2500", "a" * 64),
            ModelInfo("stage1_pancreas", "0.1.0+s2000+s2500", "b" * 64),
            ModelInfo("stage2_tumour", "0.1.0+s3500", "c" * 64),
        ],
    )
    write_case_outputs(
        args.out,
        reference=grid,
        labels=labels,
        heatmap=heatmap,
        report=report,
        images={Phase(reference_phase): sitk.Cast(grid, sitk.sitkFloat32)},
        overwrite=args.overwrite,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="pancreasai")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect")
    ins.add_argument("inputs", nargs="+", type=Path)
    ins.add_argument("--json", action="store_true")
    seg = sub.add_parser("segment")
    for phase in ("arterial", "venous", "delayed"):
        seg.add_argument(f"--{phase}", type=Path)
    seg.add_argument("--out", type=Path, required=True)
    seg.add_argument("--overwrite", action="store_true")
    seg.add_argument("--device", default="auto")
    seg.add_argument("--heatmap", action=argparse.BooleanOptionalAction, default=True)
    seg.add_argument("--progress", default="bar")
    args = parser.parse_args()
    if args.command == "inspect":
        return inspect(args.inputs)
    return segment(args, os.environ.get("FAKE_ENGINE_MODE", "ok"))


if __name__ == "__main__":
    sys.exit(main())
