"""`pancreasai calibrate`: fit the PDAC likelihood's calibration on segmented cases with known truth.

Run `pancreasai segment --batch DATA --out PRED` on cases the networks were not selected on (for the
shipped weights: synthetic cases from the training maps with a fresh seed, never the held-out maps
used for evaluation), then `pancreasai calibrate --pred PRED --gt DATA --register` stores the fit
beside the stage-2 weights. The figures printed are in-sample; judge the calibration with
`pancreasai evaluate` on held-out cases.

Each subset of phases gets its own fit (the scores shift when phases are missing): segment the same
cases once per subset (`segment --batch DATA --phases venous --out PRED_V`, ...) and pass every
prediction folder to one `--pred`. Cases are grouped by the phases their reports name; `--register`
stores one fit per subset and keeps earlier fits of other subsets for the same weights.

The strongest lesion's confidence depends on how lesions darker than the gland in neither the
arterial nor the venous phase were weighed (`segment --non-hypo-weight`; the reports record it),
so a calibration holds for one weighting: `--register` stores that weighting with the fits, and
the cascade then applies it by default; registering another weighting drops the earlier fits.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from PancreasAILib.errors import InputError

if TYPE_CHECKING:
    from PancreasAILib.cascade.calibration import LikelihoodCalibration


@dataclass
class CalibrationCase:
    name: str
    head: float
    strongest_lesion: float
    has_tumour: bool
    stage2_sha256: str | None  # the weights' identity; a version string can be renamed
    phases: str  # phase_key of the phases the case was segmented with
    non_hypo_lesion_weight: float  # how lesions darker in neither arterial nor venous were weighed (1: not)
    attenuation_ramp_hu: float  # over how many HU that weight was graded (0: a hard cut)

    @property
    def weighting(self) -> tuple[float, float]:
        from PancreasAILib.cascade.attenuation import effective_weighting

        return effective_weighting(self.non_hypo_lesion_weight, self.attenuation_ramp_hu)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit the PDAC likelihood calibration on segmented cases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pred",
        type=Path,
        nargs="+",
        required=True,
        metavar="DIR",
        help="`segment --batch` output folder(s), e.g. one per subset of phases",
    )
    parser.add_argument(
        "--gt", type=Path, required=True, metavar="DIR", help="nnU-Net-raw dataset or label folder"
    )
    parser.add_argument("--register", action="store_true", help="store the fit in the model manifest")
    parser.set_defaults(func=run)


def read_cases(pred_root: Path, gt_root: Path) -> list[CalibrationCase]:
    from PancreasAILib.cascade.calibration import phase_key
    from PancreasAILib.evaluation.evaluate import _truth_path

    cases = []
    for report_file in sorted(pred_root.glob("*/report.json")):
        report = json.loads(report_file.read_text())
        head = report.get("pdac_classifier_probability")
        if report.get("segmentation_status") != "done" or head is None:
            continue  # no pancreas (or a report older than schema 1.1): nothing to calibrate on
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(_truth_path(gt_root, report_file.parent.name))))
        has_tumour = bool((truth == 2).any())
        strongest = max((lesion["confidence"] for lesion in report.get("lesions", [])), default=0.0)
        sha256 = next((m["sha256"] for m in report.get("models", []) if m["name"] == "stage2_tumour"), None)
        name = report_file.parent.name
        if not report.get("phases"):
            raise InputError(f"{report_file} names no phases.", "Segment the case again with this version.")
        phases = phase_key(report["phases"])
        weight = report.get("non_hypo_lesion_weight")
        weight = 1.0 if weight is None else float(weight)  # reports before 1.2 did not weigh lesions
        ramp = float(report.get("attenuation_ramp_hu") or 0.0)  # before 1.4: a hard cut
        cases.append(
            CalibrationCase(name, float(head), float(strongest), has_tumour, sha256, phases, weight, ramp)
        )
    return cases


def run(args: argparse.Namespace) -> int:
    from PancreasAILib.cascade.attenuation import effective_weighting
    from PancreasAILib.cascade.calibration import PhaseCalibrations, most_phases_first
    from PancreasAILib.cascade.runner import STAGE2_MODEL
    from PancreasAILib.models.registry import get_entry, set_calibration

    cases = [case for root in args.pred for case in read_cases(root, args.gt)]
    weightings = sorted({case.weighting for case in cases})
    if len(weightings) > 1:
        made = ", ".join(f"{w:g} over ±{r:g} HU" for w, r in weightings)
        raise InputError(
            f"The predictions were segmented with different lesion weightings ({made}); "
            "a calibration holds for one.",
            "Segment every folder with the same --non-hypo-weight and --attenuation-ramp, then calibrate.",
        )
    groups: dict[str, list[CalibrationCase]] = {}
    for case in cases:
        groups.setdefault(case.phases, []).append(case)
    fits = {}
    for key in sorted(groups, key=most_phases_first):
        fit = _fit_group(key, groups[key])
        if fit is not None:
            fits[key] = fit
    if not fits:
        raise InputError(
            f"No subset of phases in {', '.join(map(str, args.pred))} has 4+ segmented cases with and "
            "without a tumour; calibration needs both.",
            "Segment more cases with `pancreasai segment --batch` (this version's reports) first.",
        )
    calibrations = PhaseCalibrations(fits)
    print("calibration:", json.dumps(calibrations.to_dict()))
    if args.register:
        entry = get_entry(STAGE2_MODEL)
        made_with = {c.stage2_sha256 for c in cases}
        if made_with != {entry.sha256}:
            raise InputError(
                f"The predictions were made with {STAGE2_MODEL} weights of sha256 "
                f"{', '.join(sorted(str(s)[:12] + '…' for s in made_with))}, but the registered "
                f"{STAGE2_MODEL} {entry.version} is {entry.sha256[:12]}….",
                "Segment the cases again with the registered weights, then calibrate.",
            )
        weight, ramp = weightings[0] if weightings else (1.0, 0.0)
        registered = effective_weighting(
            float(entry.input_spec.get("non_hypo_lesion_weight", 1.0)),
            float(entry.input_spec.get("attenuation_ramp_hu", 0.0)),
        )
        earlier = PhaseCalibrations.from_dict(entry.calibration) or PhaseCalibrations()
        if (weight, ramp) != registered:  # earlier fits hold for the old weighting only
            dropped, earlier = sorted(earlier.by_phases), PhaseCalibrations()
        else:
            dropped = []
        stored = earlier.merged(calibrations)
        set_calibration(
            STAGE2_MODEL,
            stored.to_dict(),
            input_spec={"non_hypo_lesion_weight": weight, "attenuation_ramp_hu": ramp},
        )
        kept = sorted(set(earlier.by_phases) - set(fits))
        print(
            f"stored in the manifest entry of {STAGE2_MODEL} {entry.version}: {', '.join(fits)}"
            + (f" (kept the earlier fits of {', '.join(kept)})" if kept else "")
            + f"; lesions darker than the gland in neither the arterial nor the venous phase keep "
            f"{weight:g} of their confidence, graded over ±{ramp:g} HU"
            + (
                f" (was {registered[0]:g} over ±{registered[1]:g} HU: dropped the earlier fits of "
                f"{', '.join(dropped)})"
                if (weight, ramp) != registered
                else ""
            )
        )
    return 0


def _fit_group(key: str, cases: list[CalibrationCase]) -> LikelihoodCalibration | None:
    """Fit one subset of phases and print its in-sample figures; None (said why) when it cannot be fitted."""
    from PancreasAILib.cascade.calibration import LikelihoodCalibration, uncalibrated_likelihood
    from PancreasAILib.evaluation.detection import auroc, sensitivity_specificity

    labels = np.array([c.has_tumour for c in cases])
    print(f"{key}: {len(cases)} cases ({int(labels.sum())} with tumour); in-sample figures at threshold 0.5")
    if len(cases) < 4 or labels.all() or not labels.any():
        print("  skipped: a fit needs 4+ cases, with and without a tumour")
        return None
    calibration = LikelihoodCalibration.fit(
        [c.head for c in cases], [c.strongest_lesion for c in cases], labels
    )
    before = np.array([uncalibrated_likelihood(c.head, c.strongest_lesion) for c in cases])
    after = np.array([calibration(c.head, c.strongest_lesion) for c in cases])
    for title, scores in (("uncalibrated", before), ("calibrated", after)):
        sens, spec = sensitivity_specificity(labels, scores)
        brier = float(np.mean((scores - labels) ** 2))
        print(
            f"  {title:<13} AUROC {auroc(labels, scores):.3f}  sens {sens:.3f}  spec {spec:.3f}  Brier {brier:.3f}"
        )
    return calibration
