"""`pancreasai synth`: write a synthetic multi-phase CT dataset with inserted pancreatic tumours."""

from __future__ import annotations

import argparse
from pathlib import Path

from PancreasAILib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="synthesise multi-phase CT with pancreatic tumours from organ label maps",
        description="Make arterial, venous and delayed CT volumes (int16 HU) with ground truth (1 pancreas, "
        "2 tumour) from organ label maps, and write them as an nnU-Net-raw dataset: "
        "imagesTr/<case>_0000/_0001/_0002 (arterial/venous/delayed), labelsTr, dataset.json and "
        "cases/<case>.json with the tumour facts and each phase's recorded misalignment. "
        "Deterministic per --seed, whatever --workers. Research use only.",
        epilog="example: pancreasai synth --anatomy ../shared/data/anatomy --split train --out synth --cases 100 "
        "--seed 1 --workers 2",
    )
    parser.add_argument(
        "--anatomy",
        required=True,
        metavar="DIR|procedural",
        help="folder of organ label maps (BTCV/L2R or AMOS labels; e.g. ../shared/data/anatomy), "
        "one label map file, or 'procedural' for built-in randomised anatomy",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (created; an existing non-empty folder is refused)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder (atomically, once the new dataset is complete)",
    )
    parser.add_argument("--cases", type=int, default=10, metavar="N", help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--split",
        choices=("train", "heldout", "all"),
        default="train",
        help="which anatomy maps of the fixed split to use (default train; heldout maps are "
        "for evaluation only)",
    )
    parser.add_argument(
        "--slice-thickness",
        type=float,
        default=2.5,
        metavar="MM",
        help="slice thickness and spacing in mm, 1-5 (default 2.5)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.8,
        metavar="MM",
        help="in-plane pixel spacing in mm (default 0.8; 2 or more gives fast coarse cases)",
    )
    parser.add_argument(
        "--p-tumour",
        type=float,
        default=0.8,
        metavar="P",
        help="probability that a case has at least one tumour (default 0.8)",
    )
    parser.add_argument(
        "--dicom", action="store_true", help="also write dicom/<case>/<phase>/ CT series (one study per case)"
    )
    parser.add_argument("--workers", type=int, default=2, metavar="K", help="parallel processes (default 2)")
    parser.add_argument(
        "--domain-randomise",
        action="store_true",
        help="SynthSeg-like random intensities, gamma and bias field (for training only)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PancreasAILib.atomic import check_output_dir
    from PancreasAILib.synthesis.case import SynthesisConfig
    from PancreasAILib.synthesis.dataset import resolve_anatomy, write_dataset

    if not 1.0 <= args.slice_thickness <= 5.0:
        raise InputError(
            f"--slice-thickness {args.slice_thickness} is outside 1-5 mm.", "Pass a value from 1 to 5."
        )
    if not 0.3 <= args.spacing <= 4.0:
        raise InputError(
            f"--spacing {args.spacing} is outside 0.3-4 mm.", "Pass an in-plane spacing from 0.3 to 4."
        )
    if not 0.0 <= args.p_tumour <= 1.0:
        raise InputError(f"--p-tumour {args.p_tumour} is not a probability.", "Pass a value from 0 to 1.")
    if args.workers < 1:
        raise InputError(f"--workers {args.workers} is less than 1.", "Pass --workers 1 or more.")
    check_output_dir(args.out, args.overwrite)  # fail before the slow work, not after it
    resolve_anatomy(args.anatomy, args.split)  # a folder without label maps fails here, with the fix
    work = max(args.spacing, 1.6)  # the working grid (body, attenuation) is never finer than 1.6 mm
    config = SynthesisConfig(
        spacing_mm=args.spacing,
        slice_thickness_mm=args.slice_thickness,
        work_spacing_mm=work,
        p_tumour=args.p_tumour,
        domain_randomise=args.domain_randomise,
    )
    summary = write_dataset(
        args.out,
        anatomy=args.anatomy,
        n_cases=args.cases,
        seed=args.seed,
        config=config,
        split=args.split,
        workers=args.workers,
        dicom=args.dicom,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"wrote {len(summary.cases)} cases ({summary.tumours} tumours) to {summary.out_dir} "
        f"in {summary.seconds:.1f} s ({summary.seconds / len(summary.cases):.2f} s/case)"
    )
    return 0
