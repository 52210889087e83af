"""Arguments and helpers shared by subcommands: phase inputs, progress style, output options."""

from __future__ import annotations

import argparse
from pathlib import Path

from PancreasAILib.case import build_phase_set
from PancreasAILib.phases import Phase, PhaseSet
from PancreasAILib.progress import JsonLinesProgress, ProgressCallback, TqdmProgress, null_progress


def add_phase_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="series to identify automatically: DICOM folders (may hold several series) or "
        "NIfTI/NRRD/MHA files",
    )
    for phase in Phase:
        parser.add_argument(
            f"--{phase.value}",
            type=Path,
            metavar="PATH",
            help=f"the {phase.value} phase (DICOM folder or file); overrides identification",
        )
    parser.add_argument(
        "--force",
        action="store_true",
        help="continue when inputs seem to come from different patients or studies",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="progress as bars on stderr (default), JSON lines on stdout (for the Slicer module), or nothing",
    )


def add_output_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        required=required,
        metavar="DIR",
        help="output folder (created; an existing non-empty folder is refused)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder (atomically, only once the new results are complete)",
    )


def make_progress(style: str) -> ProgressCallback:
    if style == "json":
        return JsonLinesProgress()
    if style == "bar":
        return TqdmProgress()
    return null_progress


def phase_set_from_args(args: argparse.Namespace) -> PhaseSet:
    explicit = {
        phase: getattr(args, phase.value) for phase in Phase if getattr(args, phase.value) is not None
    }
    if not explicit and not args.inputs:
        from PancreasAILib.errors import InputError

        raise InputError(
            "No input was given.", "Give a DICOM folder or image file, or --arterial/--venous/--delayed PATH."
        )
    return build_phase_set(explicit, args.inputs, force=args.force)
