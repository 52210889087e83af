"""Write docs/synthesis_case1.png..case3.png: three synthetic cases from held-out anatomy.

Each figure shows the arterial, venous and delayed phase side by side through the tumour centre
(axial, W400/L40, radiological convention: anterior up, patient's right on the image left), the
whole slice on top and a 110 mm close-up below, with the tumour outline in red and the pancreas
outline in yellow. Arterial and delayed are shown after undoing their recorded misalignment, so
the venous-grid outlines fit all three. Needs ../shared/data (falls back to procedural anatomy).

    python scripts/make_synthesis_montages.py [--out docs] [--seed 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PancreasAILib.phases import PHASE_ORDER, Phase  # noqa: E402
from PancreasAILib.synthesis.anatomy import anatomy_split, load_anatomy  # noqa: E402
from PancreasAILib.synthesis.case import SynthesisConfig, SyntheticCase, synthesize_case  # noqa: E402
from PancreasAILib.synthesis.procedural import procedural_anatomy  # noqa: E402

TITLES = {
    Phase.ARTERIAL: "late arterial (pancreatic)",
    Phase.VENOUS: "portal venous",
    Phase.DELAYED: "delayed",
}
SHARED = REPO.parent / "shared" / "data" / "anatomy"


def aligned(case: SyntheticCase, phase: Phase) -> np.ndarray:
    """The phase on the venous grid, its recorded misalignment undone."""
    image = case.phases[phase]
    if phase != Phase.VENOUS:
        image = sitk.Resample(image, case.labels, case.transforms[phase], sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(image)


def montage(case: SyntheticCase, out: Path, title: str) -> None:
    labels = sitk.GetArrayFromImage(case.labels)
    tumour = max(case.tumours, key=lambda t: t.volume_ml)
    k, j, i = np.round(case.labels.TransformPhysicalPointToContinuousIndex(tumour.centre_mm)[::-1]).astype(
        int
    )
    sx, sy = case.labels.GetSpacing()[:2]
    half = int(55 / sx)
    fig, axes = plt.subplots(2, 3, figsize=(15, 10.4), gridspec_kw={"height_ratios": [1.35, 1]})
    for col, phase in enumerate(PHASE_ORDER):
        arr = aligned(case, phase)[k]
        for row, (ys, xs) in enumerate(
            (
                (slice(None), slice(None)),
                (slice(max(j - half, 0), j + half), slice(max(i - half, 0), i + half)),
            )
        ):
            ax = axes[row, col]
            ax.imshow(
                arr[ys, xs],
                cmap="gray",
                vmin=40 - 200,
                vmax=40 + 200,
                interpolation="bilinear",
                aspect=sy / sx,
            )
            ax.contour(labels[k][ys, xs] >= 1, [0.5], colors="yellow", linewidths=0.7 if row else 0.4)
            ax.contour(labels[k][ys, xs] == 2, [0.5], colors="red", linewidths=0.9 if row else 0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                hu = tumour.tumour_hu[phase.value], tumour.parenchyma_hu[phase.value]
                ax.set_title(
                    f"{TITLES[phase]}\ntumour {hu[0]:.0f} HU vs pancreas {hu[1]:.0f} HU", fontsize=11
                )
                ax.text(0.02, 0.5, "R", color="white", transform=ax.transAxes, fontsize=12, va="center")
                ax.text(0.96, 0.5, "L", color="white", transform=ax.transAxes, fontsize=12, va="center")
    fig.suptitle(
        f"{title} — tumour {tumour.volume_ml:.1f} mL ({tumour.region}), "
        f"longest axial diameter {tumour.longest_axial_diameter_mm:.0f} mm; "
        "red: tumour, yellow: pancreas; W400/L40",
        fontsize=12,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if SHARED.is_dir():
        held = anatomy_split(SHARED)["heldout"]
        sources = [held[0], held[2], held[-1]]  # two BTCV maps and the AMOS map
        anatomies = [load_anatomy(p) for p in sources]
    else:
        anatomies = [procedural_anatomy(s) for s in (1, 2, 3)]
    config = SynthesisConfig(p_tumour=1.0, tumour_count_probs=(1.0,))
    for n, anatomy in enumerate(anatomies, start=1):
        # The first case (in a fixed order) whose tumour is 2-25 mL: large enough to see, small enough
        # to leave parenchyma around it for comparison.
        for index in range(100 * n, 100 * n + 20):
            case = synthesize_case(anatomy, config, seed=args.seed, case_index=index)
            if case.tumours and 2.0 <= max(t.volume_ml for t in case.tumours) <= 25.0:
                break
        path = args.out / f"synthesis_case{n}.png"
        montage(case, path, f"Synthetic case {n} (held-out anatomy {anatomy.name}, seed {args.seed})")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
