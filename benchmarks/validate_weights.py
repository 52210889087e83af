"""Score stage weights on a training run's validation cache with the trainer's own `validate`.

Model choice between a shipped network and a candidate must use the same cases and the same scoring
as training used; this prints both side by side (nothing is registered or changed).

    python benchmarks/validate_weights.py --stage 2 --val runs/stage2v/cache_val \\
        Resources/models/stage2_tumour.safetensors runs/stage2v/best.safetensors

Stage 1 prints the gland Dice on the whole scan; stage 2 the gland and tumour Dice with all phases
and venous-only and the PDAC Brier score, on the box with a grown prior (`validation_prior`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file

    from PancreasAILib.cli.train import MODEL_NAMES
    from PancreasAILib.models.registry import get_entry
    from PancreasAILib.training.datasets import load_cache
    from PancreasAILib.training.trainer import TrainConfig, build_model, default_spec, validate

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--val", type=Path, required=True, help="a run's cache_val folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "weights", type=Path, nargs="+", help="safetensors files with the shipped architecture"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = load_cache(args.val)
    if not cases:
        parser.error(f"{args.val} holds no cached cases")
    entry = get_entry(MODEL_NAMES[args.stage])
    print(f"{len(cases)} validation cases from {args.val}")
    for weights in args.weights:
        config = TrainConfig(
            stage=args.stage, run_dir=Path("."), net_config=entry.config, spec=default_spec(args.stage)
        )
        net, _ = build_model(config)
        net.load_state_dict(load_file(str(weights)))
        net.eval()
        with torch.no_grad():
            metrics = validate(net, cases, args.stage, config.spec, "cpu")
        print(f"{weights}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
