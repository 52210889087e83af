"""Measure what the generator makes, against the literature it is meant to follow.

Numbers are measured from generated volumes, not read back from the HU table: organ means inside
eroded organ masks (mapped into each phase with the recorded misalignment, so a moved phase is
measured where its organs really are), tumour-to-parenchyma contrast per phase, and labelled
tumour volumes against the PANORAMA quartiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.synthesis.anatomy import Organ
from PancreasAILib.synthesis.case import SynthesisConfig, SyntheticCase, synthesize_case
from PancreasAILib.synthesis.dataset import PROCEDURAL, anatomy_for_case, resolve_anatomy
from PancreasAILib.synthesis.intensity import LITERATURE_HU, PDAC_HU
from PancreasAILib.synthesis.tumour import PANORAMA_VOLUME_QUANTILES_ML

MEASURED_ORGANS: dict[str, tuple[Organ, ...]] = {
    "pancreas": (Organ.PANCREAS,),
    "liver": (Organ.LIVER,),
    "spleen": (Organ.SPLEEN,),
    "aorta": (Organ.AORTA,),
    "portal vein": (Organ.PORTAL_SPLENIC_VEIN,),
    "kidney cortex": (Organ.KIDNEY_L, Organ.KIDNEY_R),
    "tumour (PDAC)": (Organ.TUMOUR,),
}


def literature_range(name: str, phase: Phase) -> tuple[float, float]:
    p = PHASE_ORDER.index(phase)
    if name == "tumour (PDAC)":
        return PDAC_HU[p]
    return LITERATURE_HU[MEASURED_ORGANS[name][0]].phases[p]


@dataclass
class SynthesisStatistics:
    n_cases: int
    organ_hu: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # organ -> phase -> case means
    contrast: dict[str, list[float]] = field(default_factory=dict)  # phase -> parenchyma - tumour, per case
    tumour_volumes_ml: list[float] = field(default_factory=list)
    requested_volumes_ml: list[float] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            f"Synthetic CT statistics over {self.n_cases} cases (measured in eroded masks)",
            f"{'organ':<15}{'phase':<10}{'mean':>7}{'sd':>6}{'n':>4}  {'literature':>11}  in range",
            "-" * 66,
        ]
        for name, per_phase in self.organ_hu.items():
            for phase in PHASE_ORDER:
                values = per_phase.get(phase.value, [])
                if not values:
                    continue
                lo, hi = literature_range(name, phase)
                mean = float(np.mean(values))
                inside = np.mean([(lo <= v <= hi) for v in values])
                lines.append(
                    f"{name:<15}{phase.value:<10}{mean:7.1f}{np.std(values):6.1f}{len(values):4d}  "
                    f"{lo:5.0f}-{hi:<5.0f}  {'yes' if lo <= mean <= hi else 'NO ':<3} "
                    f"({100 * inside:.0f}% of cases)"
                )
        lines.append("-" * 66)
        if any(self.contrast.values()):
            parts = [
                f"{p.value} {np.mean(self.contrast[p.value]):.1f} ± {np.std(self.contrast[p.value]):.1f}"
                for p in PHASE_ORDER
                if self.contrast.get(p.value)
            ]
            lines.append("tumour-to-parenchyma contrast (HU): " + " > ".join(parts))
            lines.append(
                f"  ordered arterial > venous > delayed > 0 in "
                f"{100 * self._ordered_fraction():.0f}% of tumour cases"
            )
        if self.tumour_volumes_ml:
            q = np.quantile(self.tumour_volumes_ml, [0, 0.25, 0.5, 0.75, 1.0])
            lines.append(
                f"tumour volume (mL), n={len(self.tumour_volumes_ml)}: "
                + " / ".join(f"{v:.1f}" for v in q)
                + "   (min / q1 / median / q3 / max)"
            )
            lines.append(
                "  PANORAMA reference:      " + " / ".join(f"{v:.1f}" for v in PANORAMA_VOLUME_QUANTILES_ML)
            )
            small = np.mean(np.asarray(self.tumour_volumes_ml) < 2.0)
            err = np.abs(np.asarray(self.tumour_volumes_ml) / np.asarray(self.requested_volumes_ml) - 1)
            lines.append(
                f"  under 2 mL: {100 * small:.0f}%; labelled vs requested volume: median error "
                f"{100 * np.median(err):.1f}%, max {100 * err.max():.1f}%"
            )
        lines.append("checks: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in self.checks.items()))
        return "\n".join(lines)

    def _ordered_fraction(self) -> float:
        c = [self.contrast[p.value] for p in PHASE_ORDER]
        if not c[0]:
            return 0.0
        return float(np.mean([a > v > d > 0 for a, v, d in zip(*c, strict=True)]))


def organ_map_in_phase(case: SyntheticCase, phase: Phase) -> np.ndarray:
    """The venous-grid organ map moved into `phase` with its recorded transform."""
    organs = case.organs
    if organs is None:
        raise ValueError("Synthesise with keep_organ_labels=True to measure statistics.")
    if phase != Phase.VENOUS:
        organs = sitk.Resample(
            organs,
            case.phases[phase],
            case.transforms[phase].GetInverse(),
            sitk.sitkNearestNeighbor,
            0,
            sitk.sitkUInt8,
        )
    return sitk.GetArrayFromImage(organs)


def _core(mask: np.ndarray) -> np.ndarray:
    """Erode 2 voxels in-plane and 1 slice: away from partial volume with neighbours."""
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndi.generate_binary_structure(2, 1)
    core = ndi.binary_erosion(mask, structure=inplane, iterations=2)
    through = np.zeros((3, 3, 3), dtype=bool)
    through[:, 1, 1] = True
    eroded = ndi.binary_erosion(core, structure=through)
    return eroded if eroded.sum() >= 10 else core


def measure_case(case: SyntheticCase) -> dict[str, dict[str, float]]:
    """organ -> phase -> mean HU in the organ's core, for this case."""
    out: dict[str, dict[str, float]] = {name: {} for name in MEASURED_ORGANS}
    for phase in (p for p in PHASE_ORDER if p in case.phases):
        organs = organ_map_in_phase(case, phase)
        image = sitk.GetArrayFromImage(case.phases[phase])
        for name, codes in MEASURED_ORGANS.items():
            bbox = ndi.find_objects(np.isin(organs, codes).astype(np.uint8))
            if not bbox or bbox[0] is None:
                continue
            sl = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in bbox[0])
            core = _core(np.isin(organs[sl], codes))
            if core.sum() >= 5:
                out[name][phase.value] = float(image[sl][core].mean())
    return out


def measure_statistics(
    n_cases: int = 20,
    anatomy: str | Path | Sequence[str] = PROCEDURAL,
    seed: int = 0,
    config: SynthesisConfig | None = None,
    split: str = "train",
    progress: bool = False,
) -> SynthesisStatistics:
    """Generate `n_cases` and measure them (every case has a tumour, so contrast is measured too)."""
    base = config or SynthesisConfig()
    cfg = SynthesisConfig(**{**base.__dict__, "keep_organ_labels": True, "p_tumour": 1.0})
    sources = list(anatomy) if isinstance(anatomy, (list, tuple)) else resolve_anatomy(anatomy, split)
    stats = SynthesisStatistics(
        n_cases=n_cases,
        organ_hu={n: {} for n in MEASURED_ORGANS},
        contrast={p.value: [] for p in PHASE_ORDER},
    )
    for index in range(n_cases):
        case = synthesize_case(anatomy_for_case(sources, seed, index), cfg, seed=seed, case_index=index)
        measured = measure_case(case)
        for name, per_phase in measured.items():
            for phase, value in per_phase.items():
                stats.organ_hu[name].setdefault(phase, []).append(value)
        tum, par = measured["tumour (PDAC)"], measured["pancreas"]
        if len(tum) == len(PHASE_ORDER) and len(par) == len(PHASE_ORDER):
            for phase in PHASE_ORDER:
                stats.contrast[phase.value].append(par[phase.value] - tum[phase.value])
        for t in case.tumours:
            stats.tumour_volumes_ml.append(t.volume_ml)
            stats.requested_volumes_ml.append(t.requested_volume_ml)
        if progress:
            print(f"  case {index + 1}/{n_cases} ({case.meta['anatomy']})", flush=True)
    stats.checks = _checks(stats)
    return stats


def _checks(stats: SynthesisStatistics) -> dict[str, bool]:
    checks = {}
    within = []
    for name, per_phase in stats.organ_hu.items():
        for phase in PHASE_ORDER:
            if per_phase.get(phase.value):
                lo, hi = literature_range(name, phase)
                within.append(lo <= np.mean(per_phase[phase.value]) <= hi)
    checks["organ_hu_in_literature_range"] = bool(within) and all(within)
    means = [np.mean(stats.contrast[p.value]) if stats.contrast[p.value] else np.nan for p in PHASE_ORDER]
    checks["contrast_arterial>venous>delayed>0"] = bool(means[0] > means[1] > means[2] > 0)
    if stats.tumour_volumes_ml:
        q1, med, q3 = np.quantile(stats.tumour_volumes_ml, [0.25, 0.5, 0.75])
        checks["volume_quartiles_plausible"] = bool(
            2.0 <= q1 <= 8.0 and 4.0 <= med <= 15.4 and 6.7 <= q3 <= 35.0
        )
    return checks
