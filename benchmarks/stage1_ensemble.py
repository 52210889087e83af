"""Run any `pancreasai` command with stage 1 replaced by the average of the shipped network and others.

A research check of a candidate before it is registered as an ensemble member
(`pancreasai train stage1 ... --register --ensemble`):

    python benchmarks/stage1_ensemble.py --extra runs/stage1e/best.safetensors -- \
        segment --batch work_tmp/heldout24 --phases arterial,venous,delayed --out DIR --no-heatmap
    pancreasai evaluate --pred DIR --gt work_tmp/heldout24

The extra weights must have the shipped stage 1's architecture; they are read with safetensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import load_file

    import PancreasAILib.cascade.runner as runner
    from PancreasAILib.cli.main import main as pancreasai
    from PancreasAILib.models.registry import get_entry
    from PancreasAILib.models.unet import CoarseUNet, CoarseUNetConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extra", type=Path, nargs="+", required=True, help="stage-1 weights to average in")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the pancreasai command")
    args = parser.parse_args(argv)
    config = CoarseUNetConfig.from_dict(get_entry("stage1_pancreas").config)
    extra = []
    for path in args.extra:
        net = CoarseUNet(config)
        net.load_state_dict(load_file(str(path)))
        extra.append(net.eval())
    single = runner.predict_stage1

    def averaged(net, image, mask, patch, device="cpu", overlap=0.25):
        probs = [single(n, image, mask, patch, device, overlap) for n in (net, *extra)]
        return sum(probs) / len(probs)

    runner.predict_stage1 = averaged
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return pancreasai(command)


if __name__ == "__main__":
    raise SystemExit(main())
