"""The options every command that runs the models shares (`segment`, `demo`), and loading the models
with them: the device, the heatmap, and a run's overrides of the release's registered choices
(`cascade.settings.CascadeSettings`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from PancreasAILib.cascade.attenuation import check_ramp, check_weight
from PancreasAILib.cascade.settings import CascadeSettings, check_grow_threshold
from PancreasAILib.cascade.vessels import check_margin
from PancreasAILib.pipeline import EngineModels


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--heatmap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the diffusion anomaly heatmap (default on)",
    )
    parser.add_argument(
        "--restrict-to-pancreas",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep tumour only within 10 mm of the predicted pancreas (default on)",
    )
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test-time mirroring of the tumour network (average over the 4 in-plane mirrorings; about 4x "
        "its time; default on)",
    )
    parser.add_argument(
        "--non-hypo-weight",
        type=weight_arg,
        metavar="W",
        help="share of its confidence that a lesion darker than the gland in neither the arterial nor the "
        "venous phase keeps, in [0, 1] "
        "(PDAC is hypo-attenuating in most patients; 1 = rank by the network alone; default: the "
        "release's choice, which its likelihood calibration was fitted with)",
    )
    parser.add_argument(
        "--attenuation-ramp",
        type=ramp_arg,
        metavar="HU",
        help="grade that weight over this many HU either side of the gland's attenuation: a lesion this "
        "much darker keeps all its confidence, one this much brighter keeps W, linear between; 0 = a hard "
        "cut at the gland's attenuation (default: the release's choice)",
    )
    parser.add_argument(
        "--vessel-margin",
        type=margin_arg,
        metavar="HU",
        help="tissue this much brighter than the gland in the venous phase, continuing outside it, is "
        "vein and is left out of the pancreas (default: the release's choice)",
    )
    parser.add_argument(
        "--keep-bright-vessels",
        action="store_true",
        help="do not take bright vessel out of the pancreas label (the network's gland as it is)",
    )
    parser.add_argument(
        "--stage1-grow",
        type=grow_threshold_arg,
        metavar="P",
        help="grow stage 1's pancreas (probability >= 0.5) into the connected voxels with probability >= P "
        "before the tumour network's box is taken, in (0, 0.5]; 0.5 = no growing (default: the release's choice for "
        "the shipped stage 1; an external one is not grown)",
    )
    parser.add_argument(
        "--stage1-model",
        metavar="DIR|totalsegmentator",
        help="find the pancreas with an nnU-Net v2 model folder (plans.json, dataset.json, fold_*/) or with "
        "TotalSegmentator's installed weights instead of the shipped coarse model",
    )


def _checked(check: Callable[[float], float], complaint: str) -> Callable[[str], float]:
    """An argparse type made from the engine's own range check, so the CLI and the engine can never
    disagree on a range; the complaint is what the user reads."""

    def parse(text: str) -> float:
        try:
            return check(float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} {complaint}") from None

    return parse


weight_arg = _checked(check_weight, "is not a share in [0, 1]")
margin_arg = _checked(check_margin, "is not a positive number of HU")
ramp_arg = _checked(check_ramp, "is not a number of HU >= 0")
grow_threshold_arg = _checked(check_grow_threshold, "is not a probability in (0, 0.5]")


def cascade_settings(args: argparse.Namespace) -> CascadeSettings:
    """The run's overrides of the release's registered choices (None: as registered)."""
    return CascadeSettings(
        restrict_to_pancreas=args.restrict_to_pancreas,
        mirror=args.mirror,
        stage1_grow_threshold=args.stage1_grow,
        non_hypo_lesion_weight=args.non_hypo_weight,
        attenuation_ramp_hu=args.attenuation_ramp,
        vessel_margin_hu=args.vessel_margin,
        keep_bright_vessels=args.keep_bright_vessels,
    )


def load_models(args: argparse.Namespace) -> EngineModels:
    from PancreasAILib.cli.train import resolve_device

    device = resolve_device(args.device)
    stage1 = None
    if args.stage1_model:
        from PancreasAILib.cascade.external import load_external_stage1

        stage1 = load_external_stage1(args.stage1_model, device)
    return EngineModels.load(device, heatmap=args.heatmap, stage1=stage1, settings=cascade_settings(args))
