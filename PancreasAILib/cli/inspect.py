"""`pancreasai inspect`: what PancreasAI sees in the inputs (series, geometry, phases and why)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.case import assemble_phase_set, load_series_with_evidence
from PancreasAILib.errors import PancreasAIError
from PancreasAILib.phases import LoadedSeries, PhaseEvidence


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list the CT series, their geometry and identified contrast phase",
        description="Load the inputs, identify each series' contrast phase from DICOM tags and attenuation, "
        "and print the evidence. Nothing is written.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="DICOM folders (may hold several series) or NIfTI/NRRD/MHA files",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--force",
        action="store_true",
        help="assemble the case even when series seem to come from different patients or studies",
    )
    parser.set_defaults(func=run)


def orientation_code(image: sitk.Image) -> str:
    """Three letters naming where each index axis points (e.g. LPS, RAS), as DICOM does."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def describe(item: LoadedSeries, evidence: PhaseEvidence) -> dict:
    image = item.image
    array = sitk.GetArrayViewFromImage(image)
    return {
        "series": item.info.to_report(),
        "geometry": {
            "size": list(image.GetSize()),
            "spacing_mm": [round(v, 4) for v in image.GetSpacing()],
            "origin_mm": [round(v, 2) for v in image.GetOrigin()],
            "orientation": orientation_code(image),
            "direction": [round(v, 5) for v in image.GetDirection()],
        },
        "hu_range": [float(np.min(array)), float(np.max(array))],
        "identification": evidence.to_report(),
    }


def run(args: argparse.Namespace) -> int:
    found = load_series_with_evidence(args.inputs)
    described = [describe(item, evidence) for item, evidence in found]
    assignment: dict[str, object]
    try:
        phase_set = assemble_phase_set({}, found, force=args.force)
        assignment = {
            "phases": [p.value for p in phase_set.phases],
            "reference": phase_set.reference_phase.value,
            "warnings": phase_set.warnings,
        }
    except PancreasAIError as error:
        assignment = {"phases": [], "problem": error.problem, "fix": error.fix}
    if args.json:
        print(json.dumps({"series": described, "case": assignment}, indent=2))
        return 0
    for k, item in enumerate(described, start=1):
        series, geometry, ident = item["series"], item["geometry"], item["identification"]
        name = series["name"] or series["series_description"] or "unnamed"
        print(
            f"[{k}] {name}  ({series['kind']}, {series['modality'] or 'CT'}, {series['num_slices']} slices)"
        )
        print(
            f"    geometry: {'x'.join(map(str, geometry['size']))} voxels, spacing "
            f"{' x '.join(f'{v:.3g}' for v in geometry['spacing_mm'])} mm, orientation {geometry['orientation']}"
        )
        phase = ident["phase"] or "unenhanced / unknown"
        print(f"    phase:    {phase} (confidence {ident['confidence']:.2f})")
        for line in ident["evidence"]:
            print(f"      - {line}")
    if assignment.get("phases"):
        print(f"case: phases {', '.join(assignment['phases'])}; reference grid: {assignment['reference']}")
        for warning in assignment.get("warnings", []):
            print(f"warning: {warning}")
    elif "problem" in assignment:
        print(f"case: cannot be assembled: {assignment['problem']}\n  fix: {assignment['fix']}")
    return 0
