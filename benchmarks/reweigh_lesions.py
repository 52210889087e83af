"""Replay the attenuation weighting of lesion confidence on saved predictions, without the networks.

    python benchmarks/reweigh_lesions.py --pred work_tmp/s14/c30_grow --out work_tmp/s15/c30_ramp5 --ramp 5
    python benchmarks/phase_ablation.py --data work_tmp/calib30 --out work_tmp/s15/c30_ramp5 \
        --subsets venous arterial,venous,delayed arterial

Every `report.json` under PRED (a `segment --batch` folder, or a phase-ablation folder of them) is
copied to the same place under OUT with each lesion's confidence recomputed from its network
confidence and its attenuation against the gland (`cascade.attenuation.confidence_factor`), the
lesions re-ranked, the detection map's lesion values remapped, and the PDAC likelihood recomputed
with the registered calibration for the case's phases. The label map is linked, not copied (the
weighting never changes it), and `batch.json` is copied, so `phase_ablation.py --out OUT` only
evaluates. Why: the weighting is post-processing, so trying one costs seconds instead of an hour
of segmentation; with the settings a prediction was made with (`--ramp 0`, its weight) the replay
reproduces it (the likelihood to its last decimal: the report keeps the head to four), which is the
check to run first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.cascade.attenuation import confidence_factor
from PancreasAILib.cascade.calibration import PhaseCalibrations, uncalibrated_likelihood
from PancreasAILib.cascade.runner import STAGE2_MODEL
from PancreasAILib.cli.model_options import ramp_arg, weight_arg
from PancreasAILib.export.report import REPORT_SCHEMA_VERSION
from PancreasAILib.models.registry import get_entry

MATCH_TOLERANCE = 5e-5  # detection maps hold confidences rounded to 4 decimals, as float32


def reweighed_lesions(lesions: list[dict], weight: float, ramp_hu: float, case: str) -> list[dict]:
    """The report's lesions with confidences from `confidence_factor`, strongest first, renumbered."""
    out = []
    for lesion in lesions:
        network = lesion.get("network_confidence")
        if network is None:  # never weighed (a report before 1.2): nothing to replay from
            raise SystemExit(
                f"{case}: a lesion has no network_confidence; segment it again with this version"
            )
        factor = confidence_factor(lesion.get("attenuation_hu"), weight, ramp_hu)
        out.append({**lesion, "confidence": round(network * factor, 4), "_old": lesion["confidence"]})
    out.sort(key=lambda lesion: -lesion["confidence"])
    return [{**lesion, "id": k} for k, lesion in enumerate(out, start=1)]


def remap_detection(detection: np.ndarray, lesions: list[dict], case: str) -> np.ndarray:
    """Each lesion's voxels, found by their old confidence, set to the new one."""
    targets: dict[float, float] = {}
    for lesion in lesions:
        old, new = lesion["_old"], lesion["confidence"]
        if old < MATCH_TOLERANCE:  # its voxels cannot be told from the background
            raise SystemExit(
                f"{case}: a lesion was saved with confidence 0 (weight 0?); it cannot be replayed"
            )
        if targets.get(old, new) != new:
            raise SystemExit(f"{case}: two lesions share confidence {old} but not their new ones")
        targets[old] = new
    out = detection.copy()
    for old, new in targets.items():
        out[np.abs(detection - old) < MATCH_TOLERANCE] = new
    return out


def replay_case(case_dir: Path, out_dir: Path, calibrations: PhaseCalibrations | None, args) -> float | None:
    """Writes the replayed copy of one case; returns its new likelihood (None: not segmented)."""
    report = json.loads((case_dir / "report.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in report.get("outputs", []):
        if name in ("report.json", "detection_map.nii.gz") or not (case_dir / name).is_file():
            continue
        link = out_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to((case_dir / name).resolve())
    if report.get("segmentation_status") == "done":
        for needed in ("non_hypo_lesion_weight", "pdac_classifier_probability"):
            if report.get(needed) is None and not (
                needed == "non_hypo_lesion_weight" and args.weight is not None
            ):
                raise SystemExit(
                    f"{case_dir}: report.json has no {needed} (schema before 1.2); segment it again"
                )
        weight = args.weight if args.weight is not None else report["non_hypo_lesion_weight"]
        lesions = reweighed_lesions(report["lesions"], weight, args.ramp, case_dir.name)
        image = sitk.ReadImage(str(case_dir / "detection_map.nii.gz"))
        detection = remap_detection(sitk.GetArrayFromImage(image), lesions, case_dir.name)
        remapped = sitk.GetImageFromArray(detection.astype(np.float32))
        remapped.CopyInformation(image)
        sitk.WriteImage(remapped, str(out_dir / "detection_map.nii.gz"), True)
        strongest = max((lesion["confidence"] for lesion in lesions), default=0.0)
        head = report["pdac_classifier_probability"]
        fit, _ = calibrations.select(report["phases"]) if calibrations else (None, None)
        likelihood = fit(head, strongest) if fit else uncalibrated_likelihood(head, strongest)
        report.update(
            schema_version=REPORT_SCHEMA_VERSION,
            lesions=[{k: v for k, v in lesion.items() if k != "_old"} for lesion in lesions],
            pdac_likelihood=round(likelihood, 4),
            non_hypo_lesion_weight=weight,
            attenuation_ramp_hu=args.ramp,
            notes=[
                *report.get("notes", []),
                f"Replayed by benchmarks/reweigh_lesions.py: lesions weighed by {weight:g} graded over "
                f"±{args.ramp:g} HU, likelihood recomputed with the registered calibration (notes above "
                "describe the original run).",
            ],
        )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report.get("pdac_likelihood")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pred", type=Path, required=True, help="saved predictions (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the replayed copies")
    parser.add_argument(
        "--ramp", type=ramp_arg, required=True, help="half-width of the graded weight, HU (0: hard cut)"
    )
    parser.add_argument(
        "--weight",
        type=weight_arg,
        help="share a lesion brighter than the gland keeps (default: each report's)",
    )
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(
            f"{args.out} exists; give a new folder (the saved predictions and earlier replays are kept)"
        )
    calibrations = PhaseCalibrations.from_dict(get_entry(STAGE2_MODEL).calibration)
    partial = args.out.with_name(args.out.name + ".partial")  # renamed when every case is done
    shutil.rmtree(partial, ignore_errors=True)
    reports = sorted(args.pred.rglob("report.json"))
    likelihoods: dict[Path, float | None] = {}
    for report_file in reports:
        relative = report_file.parent.relative_to(args.pred)
        likelihoods[relative] = replay_case(report_file.parent, partial / relative, calibrations, args)
    for batch in args.pred.rglob("batch.json"):
        relative = batch.parent.relative_to(args.pred)
        summary = json.loads(batch.read_text())
        for name, entry in summary.get("cases", {}).items():
            if relative / name in likelihoods:  # batch.json's likelihoods as replayed
                entry["pdac_likelihood"] = likelihoods[relative / name]
        (partial / relative).mkdir(parents=True, exist_ok=True)
        (partial / relative / "batch.json").write_text(json.dumps(summary, indent=2) + "\n")
    partial.rename(args.out)
    print(f"replayed {len(reports)} case(s) into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
