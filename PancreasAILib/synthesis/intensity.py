"""Per-tissue, per-phase attenuation: literature values randomised per case, texture, noise.

Values follow ../shared/data/README.md (late-arterial/pancreatic, portal-venous and delayed
columns). Each case draws a bolus strength per phase shared by all organs (so enhancement moves
together, as with a real injection) mixed with per-organ jitter, within the literature range
widened by 15 % of its width on each side. The tumour is drawn as a contrast below the
parenchyma that shrinks from arterial to venous to delayed, which is the point of multi-phase
PDAC imaging. `domain_randomise=True` replaces all this by SynthSeg-like random values so a
network cannot learn one intensity table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.synthesis.anatomy import Organ
from PancreasAILib.synthesis.grid import Grid, smooth_noise

Range = tuple[float, float]


@dataclass(frozen=True)
class TissueHU:
    """Native HU, (lo, hi) per phase in PHASE_ORDER, texture amplitude (HU, smooth field)."""

    native: float
    phases: tuple[Range, Range, Range]
    texture: float = 5.0


def _around(v: float, rel: float = 0.1, floor: float = 8.0) -> Range:
    h = max(abs(v) * rel, floor)
    return (v - h, v + h)


LITERATURE_HU: dict[Organ, TissueHU] = {
    Organ.PANCREAS: TissueHU(40, ((110, 130), (90, 100), (70, 80)), 7.0),
    Organ.LIVER: TissueHU(55, (_around(75), _around(110), _around(85)), 5.0),
    Organ.SPLEEN: TissueHU(45, (_around(120, 0.12), _around(120), _around(90)), 5.0),
    Organ.AORTA: TissueHU(40, ((260, 340), (145, 175), (100, 120)), 3.0),
    Organ.ARTERY: TissueHU(40, ((250, 330), (140, 170), (100, 120)), 3.0),
    Organ.PORTAL_SPLENIC_VEIN: TissueHU(40, ((120, 150), (165, 195), (100, 120)), 3.0),
    Organ.IVC: TissueHU(40, ((75, 105), (135, 165), (90, 110)), 6.0),
    Organ.KIDNEY_R: TissueHU(30, ((160, 200), (145, 175), (110, 130)), 6.0),
    Organ.KIDNEY_L: TissueHU(30, ((160, 200), (145, 175), (110, 130)), 6.0),
    Organ.KIDNEY_MEDULLA: TissueHU(30, ((65, 95), (135, 165), (120, 150)), 8.0),
    Organ.ADRENAL_R: TissueHU(40, ((65, 85), (60, 80), (50, 65)), 4.0),
    Organ.ADRENAL_L: TissueHU(40, ((65, 85), (60, 80), (50, 65)), 4.0),
    Organ.GALLBLADDER: TissueHU(10, ((0, 20), (0, 20), (0, 20)), 3.0),
    Organ.ESOPHAGUS: TissueHU(40, ((50, 70), (60, 80), (55, 70)), 6.0),
    Organ.STOMACH: TissueHU(40, ((90, 120), (80, 100), (65, 85)), 8.0),
    Organ.DUODENUM: TissueHU(40, ((90, 120), (80, 100), (65, 85)), 8.0),
    Organ.BOWEL: TissueHU(40, ((80, 110), (75, 95), (65, 80)), 8.0),
    Organ.BLADDER: TissueHU(10, ((0, 15), (0, 15), (5, 30)), 3.0),
    Organ.PROSTATE_UTERUS: TissueHU(40, ((60, 90), (80, 100), (70, 90)), 6.0),
    Organ.LUMEN_FLUID: TissueHU(15, ((0, 25), (0, 25), (0, 25)), 6.0),
    Organ.LUMEN_AIR: TissueHU(-1000, ((-1000, -960), (-1000, -960), (-1000, -960)), 10.0),
    Organ.AIR: TissueHU(-1000, ((-1000, -1000), (-1000, -1000), (-1000, -1000)), 0.0),
    Organ.BACKGROUND: TissueHU(-1000, ((-1000, -1000), (-1000, -1000), (-1000, -1000)), 0.0),
    Organ.SKIN: TissueHU(30, ((20, 45), (25, 50), (25, 50)), 5.0),
    Organ.FAT: TissueHU(-100, ((-115, -90), (-115, -90), (-115, -90)), 6.0),
    Organ.MUSCLE: TissueHU(50, ((50, 60), (55, 65), (52, 62)), 5.0),
    Organ.BONE_CORTICAL: TissueHU(800, ((650, 1000), (650, 1000), (650, 1000)), 40.0),
    Organ.BONE_TRABECULAR: TissueHU(220, ((150, 300), (160, 310), (155, 305)), 30.0),
    Organ.RIB: TissueHU(450, ((330, 600), (330, 600), (330, 600)), 30.0),
    Organ.DISC: TissueHU(80, ((70, 100), (75, 105), (75, 105)), 5.0),
    Organ.SPINAL_CANAL: TissueHU(20, ((10, 35), (12, 38), (12, 38)), 4.0),
    Organ.LUNG: TissueHU(-860, ((-900, -800), (-900, -800), (-900, -800)), 25.0),
    Organ.HEART: TissueHU(40, ((200, 260), (140, 170), (100, 120)), 8.0),
    Organ.SMALL_VESSEL: TissueHU(40, ((130, 180), (140, 180), (95, 120)), 5.0),
    Organ.RENAL_VEIN: TissueHU(40, ((130, 170), (150, 180), (100, 120)), 4.0),
    Organ.HEPATIC_VESSEL: TissueHU(40, ((90, 120), (150, 180), (100, 120)), 4.0),
}
PDAC_HU: tuple[Range, Range, Range] = ((55, 75), (60, 80), (60, 75))
PANCREAS_HU = LITERATURE_HU[Organ.PANCREAS].phases
WIDEN = 0.15  # sampled values may leave the literature range by this fraction of its width


@dataclass
class HUTable:
    """What one case uses: mean and texture amplitude per (phase, label), tumour and noise."""

    mean: np.ndarray  # (3, 256) HU, PHASE_ORDER
    texture: np.ndarray  # (3, 256) HU amplitude of the smooth texture field
    tumour: np.ndarray  # (3,) HU
    duct: float  # HU of a dilated duct (fluid)
    noise_sd: np.ndarray  # (3,) HU
    psf_mm: float  # in-plane partial-volume blur (sigma)
    spleen_heterogeneity: float  # arterial-phase spleen pattern amplitude
    domain_randomised: bool = False
    extra: dict = field(default_factory=dict)

    def hu(self, phase: Phase, organ: Organ) -> float:
        return float(self.mean[PHASE_ORDER.index(phase), int(organ)])

    def to_dict(self) -> dict:
        """The table as JSON: organ -> phase -> HU, and the rest."""
        organs = {
            o.name.lower(): {p.value: round(self.hu(p, o), 1) for p in PHASE_ORDER}
            for o in LITERATURE_HU
            if o not in (Organ.BACKGROUND, Organ.AIR)
        }
        return {
            "organs": organs,
            "tumour": {p.value: round(float(self.tumour[i]), 1) for i, p in enumerate(PHASE_ORDER)},
            "duct": round(self.duct, 1),
            "noise_sd": {p.value: round(float(self.noise_sd[i]), 1) for i, p in enumerate(PHASE_ORDER)},
            "psf_mm": round(self.psf_mm, 2),
            "domain_randomised": self.domain_randomised,
            **self.extra,
        }


def sample_hu_table(rng: np.random.Generator, domain_randomise: bool = False) -> HUTable:
    """One case's attenuation table."""
    if domain_randomise:
        return _sample_domain_randomised(rng)
    mean = np.full((3, 256), -1000.0, dtype=np.float32)
    texture = np.zeros((3, 256), dtype=np.float32)
    bolus = rng.uniform(0, 1, size=3)  # per-phase injection strength / timing, shared by organs
    for organ, tissue in LITERATURE_HU.items():
        jitter = rng.uniform(0, 1, size=3)
        for p, (lo, hi) in enumerate(tissue.phases):
            u = np.clip(0.55 * bolus[p] + 0.45 * jitter[p], 0, 1)
            mean[p, organ] = lo + (hi - lo) * (-WIDEN + (1 + 2 * WIDEN) * u)
            texture[p, organ] = tissue.texture * rng.uniform(0.7, 1.3)
    pancreas = mean[:, Organ.PANCREAS]
    c_art = rng.uniform(35.0, 65.0)
    c_ven = rng.uniform(12.0, min(35.0, c_art - 8.0))
    c_del = rng.uniform(6.0, min(15.0, c_ven - 4.0))
    tumour = pancreas - np.array([c_art, c_ven, c_del], dtype=np.float32)
    noise = rng.uniform(10.0, 18.0) * rng.uniform(0.92, 1.08, size=3)
    return HUTable(
        mean=mean,
        texture=texture,
        tumour=tumour,
        duct=float(rng.uniform(5, 20)),
        noise_sd=noise.astype(np.float32),
        psf_mm=float(rng.uniform(0.4, 0.8)),
        spleen_heterogeneity=float(rng.uniform(8.0, 25.0)),
    )


def _sample_domain_randomised(rng: np.random.Generator) -> HUTable:
    """SynthSeg-like: any tissue may take almost any value; only air, lung, fat and bone stay loose."""
    mean = rng.uniform(-60.0, 320.0, size=(3, 256)).astype(np.float32)
    for organ, (lo, hi) in {
        Organ.AIR: (-1000, -950),
        Organ.BACKGROUND: (-1000, -950),
        Organ.LUMEN_AIR: (-1000, -700),
        Organ.LUNG: (-950, -600),
        Organ.FAT: (-220, -20),
        Organ.BONE_CORTICAL: (300, 1400),
        Organ.BONE_TRABECULAR: (100, 700),
        Organ.RIB: (200, 900),
    }.items():
        mean[:, organ] = rng.uniform(lo, hi, size=3)
    texture = rng.uniform(0.0, 25.0, size=(3, 256)).astype(np.float32)
    tumour = mean[:, Organ.PANCREAS] - rng.uniform(5.0, 90.0, size=3).astype(np.float32)
    return HUTable(
        mean=mean,
        texture=texture,
        tumour=tumour,
        duct=float(rng.uniform(-20, 60)),
        noise_sd=rng.uniform(4.0, 40.0, size=3).astype(np.float32),
        psf_mm=float(rng.uniform(0.3, 1.5)),
        spleen_heterogeneity=float(rng.uniform(0, 40)),
        domain_randomised=True,
        extra={
            "gamma": [float(g) for g in np.exp(rng.normal(0, 0.25, size=3))],
            "bias_amplitude": float(rng.uniform(0.0, 0.2)),
        },
    )


@dataclass
class TextureFields:
    """Anatomy-bound random fields on the working grid, shared by the phases of one case."""

    coarse: np.ndarray  # sigma ~3 mm: organ heterogeneity
    fine: np.ndarray  # sigma ~1.5 mm: lobulation, trabeculae
    spleen: np.ndarray  # arterial-phase splenic pattern


def texture_fields(rng: np.random.Generator, grid: Grid) -> TextureFields:
    return TextureFields(
        coarse=smooth_noise(rng, grid, 3.0),
        fine=smooth_noise(rng, grid, 1.5),
        spleen=smooth_noise(rng, grid, 5.0),
    )


def mean_map(labels: np.ndarray, table: HUTable, phase: Phase, fields: TextureFields) -> np.ndarray:
    """Noise-free HU of one phase on the working grid: table value plus organ texture."""
    p = PHASE_ORDER.index(phase)
    out = table.mean[p][labels]
    amp = table.texture[p][labels]
    out += amp * (0.6 * fields.coarse + 0.4 * fields.fine)
    if phase == Phase.ARTERIAL:
        spleen = labels == Organ.SPLEEN
        out[spleen] += table.spleen_heterogeneity * fields.spleen[spleen]
    return out


def apply_domain_randomisation(
    image: np.ndarray, grid: Grid, table: HUTable, phase: Phase, rng: np.random.Generator
) -> np.ndarray:
    """Gamma on the soft-tissue window and a smooth multiplicative bias field (training only)."""
    gamma = table.extra["gamma"][PHASE_ORDER.index(phase)]
    lo, hi = -1000.0, 1500.0
    x = np.clip((image - lo) / (hi - lo), 0, 1)
    image = lo + (hi - lo) * np.power(x, gamma, dtype=np.float32)
    bias = 1.0 + table.extra["bias_amplitude"] * smooth_noise(rng, grid, 80.0) / 3.0
    body = image > -700
    image[body] = (image[body] + 1000.0) * bias[body] - 1000.0
    return image
