"""`pancreasai align`: register every phase onto the reference and write them on its grid."""

from __future__ import annotations

import argparse
import json
import time

import SimpleITK as sitk

from PancreasAILib import __version__
from PancreasAILib.atomic import (
    atomic_output_dir,
    check_output_dir,
    write_file_atomically,
    write_text_atomically,
)
from PancreasAILib.cli.common import (
    add_output_options,
    add_phase_inputs,
    add_progress_option,
    make_progress,
    phase_set_from_args,
)
from PancreasAILib.registration import align_phase_set


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="align the phases onto the reference phase and write them on its grid",
        description="Rigidly (optionally affinely) register each phase onto the reference (venous when "
        "present) and write <phase>.nii.gz on the reference grid plus alignment.json with the "
        "quality figures (NCC in the body before and after).",
    )
    add_phase_inputs(parser)
    add_output_options(parser)
    parser.add_argument("--affine", action="store_true", help="refine the rigid alignment with an affine one")
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, args.overwrite)  # fail before the slow work, not after it
    progress = make_progress(args.progress)
    start = time.perf_counter()
    phase_set = phase_set_from_args(args)
    aligned = align_phase_set(phase_set, affine=args.affine, progress=progress)
    summary = {
        "pancreasai_version": __version__,
        "reference_phase": aligned.reference_phase.value,
        "phases": {p.value: phase_set.evidence[p].to_report() for p in phase_set.phases},
        "inputs": {p.value: phase_set.series[p].info.to_report() for p in phase_set.phases},
        "alignment": [result.to_report() for result in aligned.alignments],
        "warnings": phase_set.warnings + [r.warning for r in aligned.alignments if r.warning],
        "seconds": round(time.perf_counter() - start, 2),
    }
    with atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
        for phase, image in aligned.images.items():
            write_file_atomically(
                staging / f"{phase.value}.nii.gz",
                lambda tmp, im=image: sitk.WriteImage(sitk.Cast(im, sitk.sitkInt16), str(tmp), True),
            )
        write_text_atomically(staging / "alignment.json", json.dumps(summary, indent=2))
    for result in aligned.alignments:
        print(
            f"{result.phase.value:>9} → {aligned.reference_phase.value}: NCC in body "
            f"{result.ncc_before:.3f} → {result.ncc_after:.3f}, shift "
            f"{sum(v * v for v in result.translation_mm) ** 0.5:.1f} mm, rotation {result.rotation_deg:.2f}°"
            + (f"  WARNING: {result.warning}" if result.warning else "")
        )
    print(
        f"wrote {', '.join(p.value for p in aligned.images)} on the {aligned.reference_phase.value} grid "
        f"and alignment.json to {args.out}"
    )
    return 0
