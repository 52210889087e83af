"""Run any `pancreasai` command with stage 1 replaced by the average of the shipped networks and others.

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

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extra", type=Path, nargs="+", required=True, help="stage-1 weights to average in")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the pancreasai command")
    args = parser.parse_args(argv)
    extra = [load_file(str(path)) for path in args.extra]  # safetensors: data only
    registered = runner.load_ensemble_weights

    def with_extra(name, *rest, **kwargs):
        # Every registered member and every extra network get the same weight in the average, exactly
        # as if the extras had been registered with `--register --ensemble`.
        states, entry = registered(name, *rest, **kwargs)
        return (states + extra if name == runner.STAGE1_MODEL else states), entry

    runner.load_ensemble_weights = with_extra
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return pancreasai(command)


if __name__ == "__main__":
    raise SystemExit(main())
