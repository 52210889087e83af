"""Stage 1 from a pancreas segmenter the user already has, instead of the built-in coarse network.

`--stage1 builtin` (default) uses the shipped network. An external model is wrapped so the cascade
can ask it for a pancreas probability on the stage-1 grid (`predict_probability`).
"""

from __future__ import annotations

from PancreasAILib.errors import InputError


def load_external_stage1(spec: str, device: str):
    """None for the built-in stage 1, else an object with `predict_probability(hu, mask, grid)`."""
    if spec in ("", "builtin"):
        return None
    if spec.startswith("nnunet:") or spec == "totalsegmentator":
        from PancreasAILib.models.nnunet_stage1 import load_nnunet_stage1

        return load_nnunet_stage1(spec, device)
    raise InputError(f"Unknown --stage1 model {spec!r}.",
                     "Use builtin, nnunet:/path/to/nnUNet_model_folder or totalsegmentator.")
