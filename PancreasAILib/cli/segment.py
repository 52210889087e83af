"""`pancreasai segment`: one case, or a batch of cases with the models loaded once.

One case: any subset of phases (DICOM folders or image files), identified automatically or named
with --arterial/--venous/--delayed. Batch: `--batch DIR` holding one sub-folder per case (its
series are identified) or an nnU-Net-raw image folder (`<case>_0000/1/2.nii.gz` = arterial /
venous / delayed); each case gets its own output folder and a line in `batch.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from PancreasAILib.atomic import check_output_dir, write_text_atomically
from PancreasAILib.case import build_phase_set
from PancreasAILib.cli.common import (
    add_output_options,
    add_phase_inputs,
    add_progress_option,
    make_progress,
    phase_set_from_args,
)
from PancreasAILib.cli.model_options import add_model_options, load_models
from PancreasAILib.errors import ExitCode, InputError, PancreasAIError
from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.pipeline import CaseResult, PipelineOptions, run_case
from PancreasAILib.registration import AlignmentCache

NNUNET_SUFFIXES = {f"_{i:04d}": phase for i, phase in enumerate(PHASE_ORDER)}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="pancreas and tumour segmentation, lesions, PDAC likelihood and anomaly heatmap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_phase_inputs(parser)
    add_output_options(parser)
    add_model_options(parser)
    parser.add_argument(
        "--batch",
        type=Path,
        metavar="DIR",
        help="segment every case in DIR (sub-folders, or nnU-Net-raw <case>_000N.nii.gz files)",
    )
    parser.add_argument(
        "--phases",
        type=parse_phases,
        metavar="LIST",
        help="with --batch: use only these phases of each case, e.g. venous or arterial,venous "
        "(the phase ablation)",
    )
    parser.add_argument("--affine", action="store_true", help="affine after rigid alignment")
    parser.add_argument(
        "--alignment-cache",
        type=Path,
        metavar="DIR",
        help="reuse registrations of the very same images and settings stored in DIR, and store new ones "
        "(for repeated runs over one dataset, e.g. the phase ablation; the same transforms, so the same results)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the heatmap's stochastic parts (default 0)"
    )
    add_progress_option(parser)
    parser.set_defaults(func=run)


def parse_phases(text: str) -> tuple[Phase, ...]:
    try:
        phases = tuple(Phase(p.strip()) for p in text.split(",") if p.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; use arterial, venous and/or delayed, comma-separated"
        ) from err
    if not phases:
        raise argparse.ArgumentTypeError("name at least one phase")
    return phases


def _attenuation_words(lesion) -> str:
    """', 18 HU below the gland (arterial), ...' so a reader sees why a lesion ranks where it does."""
    if not lesion.attenuation_hu:
        return ""
    words = ", ".join(
        f"{abs(v):.0f} HU {'below' if v < 0 else 'above'} the gland ({phase})"
        for phase, v in lesion.attenuation_hu.items()
    )
    if lesion.network_confidence is not None and lesion.confidence < lesion.network_confidence:
        darker = "" if lesion.hypoattenuating else "not hypo-attenuating: "
        words += f"; {darker}network confidence {lesion.network_confidence:.2f} weighed down"
    return f"; {words}"


def summarise(result: CaseResult) -> list[str]:
    report = result.report
    lines = [
        f"segmentation: {report.segmentation_status}"
        + (f" ({report.segmentation_reason})" if report.segmentation_reason else "")
    ]
    if report.pdac_likelihood is not None:
        lines.append(f"PDAC likelihood: {report.pdac_likelihood:.2f} (research use only)")
    for lesion in report.lesions:
        x, y, z = lesion.centroid_mm
        lines.append(
            f"lesion {lesion.id}: {lesion.volume_ml:.1f} mL, {lesion.longest_axial_diameter_mm:.0f} mm, "
            f"confidence {lesion.confidence:.2f}, at LPS ({x:.0f}, {y:.0f}, {z:.0f}) mm"
            + _attenuation_words(lesion)
        )
    vessels = report.vessel_exclusion
    if vessels is not None and vessels.excluded_ml > 0:
        lines.append(vessels.summary())
    if report.heatmap.computed:
        lines.append(f"heatmap: {report.heatmap.summary}")
    lines.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return run_batch(args)
    check_output_dir(args.out, args.overwrite)
    progress = make_progress(args.progress)
    phase_set = phase_set_from_args(args)
    progress("load", 1.0, ", ".join(p.value for p in phase_set.phases))
    models = load_models(args)
    options = pipeline_options(args)
    result = run_case(phase_set, args.out, options, models=models, progress=progress)
    for line in summarise(result):
        print(line)
    print(f"wrote {result.outputs.out_dir}")
    return int(ExitCode.NO_PANCREAS) if result.report.segmentation_status == "no_pancreas" else 0


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(
        affine=args.affine,
        overwrite=args.overwrite,
        seed=args.seed,
        heatmap=args.heatmap,
        alignment_cache=AlignmentCache(args.alignment_cache) if args.alignment_cache else None,
    )


def find_batch_cases(folder: Path) -> dict[str, dict[Phase, Path] | list[Path]]:
    """Case name -> explicit phase files (nnU-Net naming) or the case folder's paths to identify."""
    if not folder.is_dir():
        raise InputError(f"The batch folder {folder} does not exist.", "Give a folder of cases to --batch.")
    for images in (folder / "imagesTs", folder / "imagesTr", folder):
        named: dict[str, dict[Phase, Path]] = defaultdict(dict)
        for path in sorted(images.glob("*.nii.gz")) if images.is_dir() else []:
            stem = path.name[: -len(".nii.gz")]
            if stem[-5:] in NNUNET_SUFFIXES:
                named[stem[:-5]][NNUNET_SUFFIXES[stem[-5:]]] = path
        if named:
            return dict(named)
    cases = {p.name: [p] for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not cases:
        raise InputError(
            f"{folder} holds no cases.",
            "Put one sub-folder per case (DICOM or images), or nnU-Net-raw <case>_000N.nii.gz files.",
        )
    return cases


def run_batch(args: argparse.Namespace) -> int:
    cases = find_batch_cases(args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = make_progress(args.progress)
    start = time.perf_counter()
    models = load_models(args)
    load_s = time.perf_counter() - start
    options = pipeline_options(args)
    summary: dict[str, dict] = {}
    for k, (name, source) in enumerate(cases.items()):
        case_start = time.perf_counter()
        progress("batch", k / len(cases), name)
        try:
            if args.phases and not isinstance(source, dict):
                raise InputError(
                    f"--phases needs explicitly named phase files; case {name} is a folder to identify.",
                    "Use an nnU-Net-raw batch folder (<case>_000N.nii.gz) with --phases.",
                )
            if isinstance(source, dict) and args.phases:
                source = {p: path for p, path in source.items() if p in args.phases}
                if not source:
                    raise InputError(
                        f"Case {name} has none of the phases {', '.join(p.value for p in args.phases)}.",
                        "Check --phases against the case's files.",
                    )
            phase_set = (
                build_phase_set(source, [], force=args.force)
                if isinstance(source, dict)
                else build_phase_set({}, source, force=args.force)
            )
            result = run_case(phase_set, args.out / name, options, models=models)
            summary[name] = {
                "status": result.report.segmentation_status,
                "pdac_likelihood": result.report.pdac_likelihood,
                "lesions": len(result.report.lesions),
                "seconds": round(time.perf_counter() - case_start, 2),
            }
        except PancreasAIError as error:  # one bad case must not stop the batch; it is reported
            summary[name] = {"status": "error", "problem": error.problem, "fix": error.fix}
        print(f"{name}: {summary[name]}")
    total = time.perf_counter() - start
    write_text_atomically(
        args.out / "batch.json",
        json.dumps(
            {"cases": summary, "model_load_s": round(load_s, 2), "total_s": round(total, 2)}, indent=2
        ),
    )
    progress("batch", 1.0, f"{len(cases)} cases in {total:.0f} s (models loaded once in {load_s:.1f} s)")
    failed = sum(v["status"] == "error" for v in summary.values())
    return int(ExitCode.BAD_INPUT) if failed == len(cases) else 0
