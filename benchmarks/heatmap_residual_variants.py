"""How should the heatmap turn input − reconstruction into one map? AUROC of alternatives (issue 5).

The shipped heatmap averages |input − reconstruction| over the present phases and smooths it. This
benchmark reconstructs each cached case once at the calibrated L, S and steps and scores other
combinations on the same residuals, so a proposed change can be judged on validation cases from
the training anatomy before anything is calibrated or shipped:

- one phase only (arterial, venous, delayed);
- phases whitened by their median |residual| inside the region, or weighted 2 : 1 : 0.5;
- the hypo-attenuating part only (PDAC is darker than the gland), before or after smoothing;
- the map damped near the gland's boundary (partial volume with fat and vessels), weight
  min(1, (d + a) / b) at distance d mm inside the gland;
- the classifier's own evidence: its local logit map on the clean slices (averaged over four
  half-stride shifts, upsampled), the residual weighted by exp(0.25 * logit), and the residual
  weighted by the classifier's saliency |d logit / d x| (also smoothed across slices).

Every variant is smoothed in-plane only, except the shipped map, which is also smoothed across
slices with the calibrated sigma (`smooth_z_mm`); the in-plane-only mean |r| is its baseline.

    python benchmarks/heatmap_residual_variants.py --cache work_tmp/anomaly/cache/val --cases 16

Prints the mean per-case voxel AUROC inside the true pancreas (tumour against gland) per variant,
and the mean map over healthy gland by distance from its boundary against the mean over tumour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BOUNDARY_WEIGHTS = ((1.0, 3.0), (2.0, 4.0), (1.0, 6.0), (3.0, 6.0))  # (a, b) mm


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from scipy import ndimage as ndi

    from PancreasAILib.anomaly import AnomalyModel
    from PancreasAILib.anomaly.heatmap import gaussian_blur2d, smooth_across_slices
    from PancreasAILib.anomaly.metrics import auroc
    from PancreasAILib.anomaly.preprocess import prepare_slices, restore
    from PancreasAILib.training.anomaly_data import list_cases, load_cached_case

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, required=True, help="anomaly case cache (pancreasai train anomaly)"
    )
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = AnomalyModel.load()
    d = model.defaults
    level, guidance, steps = int(d["noise_level"]), float(d["guidance"]), int(d["steps"])
    sigma = float(d["smooth_mm"]) / model.spec.model_spacing_mm
    cases = [load_cached_case(p) for p in list_cases(args.cache)[: args.cases]]
    if not cases:
        raise SystemExit(f"No cached cases in {args.cache}; build them with `pancreasai train anomaly`.")

    def logit_map(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """The classifier's local logits at t = 0, averaged over half-stride shifts, at slice resolution."""
        half, t = model.classifier.config.stride // 2, torch.zeros(x.shape[0], dtype=torch.long)
        total = torch.zeros_like(x[:, :1])
        for dy, dx in ((0, 0), (0, half), (half, 0), (half, half)):
            shifted = [torch.roll(v, (dy, dx), (2, 3)) for v in (x, region)]
            with torch.no_grad():
                cells = model.classifier.logit_map(shifted[0], t, torch.ones(x.shape[0], 3), shifted[1])
            up = F.interpolate(cells, size=x.shape[-2:], mode="bilinear", align_corners=False)
            total += torch.roll(up, (-dy, -dx), (2, 3))
        return total / 4

    def saliency(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """|d logit / d x| of the classifier at t = 0, summed over the phases."""
        xg = x.detach().requires_grad_(True)
        logit = model.classifier(
            xg, torch.zeros(x.shape[0], dtype=torch.long), torch.ones(x.shape[0], 3), region
        )
        (grad,) = torch.autograd.grad(logit.sum(), xg)
        return grad.abs().sum(1, keepdim=True)

    def smooth(x: torch.Tensor) -> torch.Tensor:
        """The heatmap's in-plane Gaussian, phase by phase."""
        return torch.cat([gaussian_blur2d(x[:, k : k + 1], sigma) for k in range(x.shape[1])], 1)

    scores: dict[str, list[float]] = {}
    by_distance = []
    for case in cases:
        batch = prepare_slices(case.roi_hu, np.ones(3, bool), case.labels > 0, case.spacing_zyx, model.spec)
        present = torch.ones(batch.x.shape[0], 3)
        residual = batch.x - model.reconstruct(batch.x, present, level, guidance, steps, region=batch.region)
        magnitude = residual.abs()
        inside = batch.region[:, 0] > 0.5
        mad = torch.stack([magnitude[:, k][inside].median() for k in range(3)]) + 1e-6

        mean_r = smooth(magnitude.mean(1, keepdim=True))
        logits = logit_map(batch.x, batch.region)
        variants = {
            "mean |r| in-plane only": mean_r,
            "arterial |r|": smooth(magnitude[:, 0:1]),
            "venous |r|": smooth(magnitude[:, 1:2]),
            "delayed |r|": smooth(magnitude[:, 2:3]),
            "whitened by MAD": smooth((magnitude / mad[None, :, None, None]).mean(1, keepdim=True)),
            "weighted 2:1:0.5": smooth(
                (magnitude * torch.tensor([2.0, 1.0, 0.5])[None, :, None, None]).mean(1, keepdim=True)
            ),
            "hypo part": smooth((-residual).clamp(min=0).mean(1, keepdim=True)),
            "hypo part of smoothed": smooth(-residual).clamp(min=0).mean(1, keepdim=True),
            "classifier logit map": logits,
            "|r| x exp(0.25 logit)": mean_r * torch.exp(0.25 * logits),
            "|r| x classifier saliency": mean_r * smooth(saliency(batch.x, batch.region)),
        }
        gland, truth = case.labels > 0, case.labels[case.labels > 0] == 2
        maps = {name: restore(v[:, 0], batch, case.labels.shape) for name, v in variants.items()}
        depth = ndi.distance_transform_edt(gland, sampling=case.spacing_zyx)

        sigma_z, spacing_z = float(d["smooth_z_mm"]), float(case.spacing_zyx[0])
        maps["mean |r| (shipped)"] = smooth_across_slices(
            maps["mean |r| in-plane only"], batch.dilated, sigma_z, spacing_z
        )
        maps["|r| x saliency, across slices"] = smooth_across_slices(
            maps["|r| x classifier saliency"], batch.dilated, sigma_z, spacing_z
        )
        shipped = maps["mean |r| (shipped)"]
        for a, b in BOUNDARY_WEIGHTS:
            maps[f"boundary-damped ({a:g}, {b:g})"] = shipped * np.clip((depth + a) / b, 0, 1)
        for name, heat in maps.items():
            scores.setdefault(name, []).append(auroc(heat[gland], truth))
        healthy = case.labels == 1
        by_distance.append(
            [
                shipped[healthy & (depth <= 2)].mean(),
                shipped[healthy & (depth > 2) & (depth <= 4)].mean(),
                shipped[healthy & (depth > 4)].mean(),
                shipped[case.labels == 2].mean(),
            ]
        )
    print(
        f"{len(cases)} cases from {args.cache}; L {level}, S {guidance:g}, {steps} steps, "
        f"smoothing across slices {float(d['smooth_z_mm']):g} mm"
    )
    for name, values in scores.items():
        print(f"{name:28s} AUROC {np.nanmean(values):.3f}")
    edge, middle, deep, tumour = np.nanmean(by_distance, axis=0)
    print(
        f"mean map over healthy gland: {edge:.3f} within 2 mm of its boundary, {middle:.3f} at 2-4 mm, "
        f"{deep:.3f} deeper; over tumour {tumour:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
