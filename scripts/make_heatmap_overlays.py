"""Make docs/heatmap_case{1,2,3}.png: anomaly heatmaps on three held-out synthetic cases.

Each figure shows, on the ROI slice with the most tumour: the arterial and venous phases, the
heatmap from all three phases and the heatmap from the venous phase alone, each overlay with the
true tumour outlined (green, never seen by the models) and the dilated pancreas region (white).

    python scripts/make_heatmap_overlays.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from PancreasAILib.anomaly import AnomalyModel
    from PancreasAILib.anomaly.metrics import case_metrics
    from PancreasAILib.training.anomaly_data import CacheSpec, build_cache, list_cases, load_cached_case

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--anatomy", type=Path, default=REPO.parent / "shared" / "data" / "anatomy")
    parser.add_argument("--cache", type=Path, default=REPO / "work_tmp" / "anomaly" / "cache" / "heldout")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--cases", type=int, nargs=3, default=(0, 3, 6), help="held-out cache indices")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    build_cache(
        CacheSpec(
            str(args.anatomy), "heldout", max(args.cases) + 1, seed=1001, dr_fraction=0.0, p_tumour=1.0
        ),
        args.cache,
    )
    paths = list_cases(args.cache)
    model = AnomalyModel.load()
    threshold = float(model.defaults["threshold"])
    for number, index in enumerate(args.cases, start=1):
        case = load_cached_case(paths[index])
        labels, spacing = case.labels, case.spacing_zyx
        full = model.heatmap(case.roi_hu, np.ones(3, bool), labels > 0, spacing)
        venous = model.heatmap(case.roi_hu, np.array([False, True, False]), labels > 0, spacing)
        z = int(np.argmax((labels == 2).sum(axis=(1, 2))))
        region = full.heatmap[z] > 0
        m_full = case_metrics(full.heatmap, labels, threshold)
        m_ven = case_metrics(venous.heatmap, labels, threshold)
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), dpi=100)
        extent = (0, labels.shape[2] * spacing[2], labels.shape[1] * spacing[1], 0)
        for ax, c, name in ((axes[0], 0, "arterial"), (axes[1], 1, "venous")):
            ax.imshow(case.roi_hu[c, z], cmap="gray", vmin=-120, vmax=280, extent=extent)
            ax.set_title(f"{name} phase (HU -120..280)")
        for ax, res, m, name in (
            (axes[2], full, m_full, "all 3 phases"),
            (axes[3], venous, m_ven, "venous only"),
        ):
            ax.imshow(case.roi_hu[1, z], cmap="gray", vmin=-120, vmax=280, extent=extent)
            heat = np.ma.masked_where(res.heatmap[z] <= 0.02, res.heatmap[z])
            im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=0.75, extent=extent)
            ax.contour(region, levels=[0.5], colors="white", linewidths=0.6, extent=extent, origin="upper")
            ax.set_title(
                f"heatmap, {name}\nAUROC {m['auroc']:.2f}, Dice@{threshold:.2f} {m['dice']:.2f}, "
                f"{res.seconds:.1f} s"
            )
        for ax in axes:
            if (labels[z] == 2).any():
                ax.contour(
                    labels[z] == 2, levels=[0.5], colors="lime", linewidths=1.0, extent=extent, origin="upper"
                )
            ax.set_xlabel("mm")
        fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.02)
        fig.suptitle(
            f"Held-out anatomy {case.meta['anatomy']} (synthetic case {index}, "
            f"{'domain-randomised' if case.meta['domain_randomise'] else 'literature'} intensities), "
            f"slice {z}: tumour in green (truth, unseen by the models), dilated pancreas in white. "
            "Research use only.",
            fontsize=9,
        )
        fig.tight_layout()
        out = args.out / f"heatmap_case{number}.png"
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        print(f"{out}: {case.meta['anatomy']} AUROC {m_full['auroc']:.3f} (venous only {m_ven['auroc']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
