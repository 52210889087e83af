"""One synthetic multi-phase case: anatomy -> body -> tumours -> phases with misalignment.

Two grids keep it fast: a working grid (default 1.6 mm in-plane) on which the body is filled and
the noise-free, partial-volume-blurred attenuation of each phase is built, and the output grid
(default 0.8 mm, 2.5 mm slices) onto which each phase is resampled once — through its own small
rigid transform, which is how the phases come out misaligned — and where tumours, ducts, noise
and the exact labels live. Every random draw comes from a stream spawned from (seed, case index),
one stream per purpose and per phase, so a case is byte-identical for a seed whatever else is
asked (phases, organ maps, worker count).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.synthesis.anatomy import Anatomy, Organ
from PancreasAILib.synthesis.body import plan_body, render_body
from PancreasAILib.synthesis.centreline import pancreas_centreline
from PancreasAILib.synthesis.grid import Grid
from PancreasAILib.synthesis.intensity import (
    apply_domain_randomisation,
    mean_map,
    sample_hu_table,
    texture_fields,
)
from PancreasAILib.synthesis.tumour import (
    Insert,
    TumourFacts,
    _sample_nearest,
    apply_atrophy,
    duct_insert,
    longest_axial_diameter,
    plan_tumours,
    realise_tumour,
)

NOMINAL_PSF_MM = 0.6
TRANSFORM_CONVENTION = (
    "ITK fixed(venous)->moving(phase) rigid transform: a point x of the venous grid shows the same anatomy "
    "as point R(x - c) + c + t of this phase; sitk.Resample(phase_image, venous_image, transform) aligns it."
)


# Bump whenever the same seed and configuration give other cases, so caches made by an older
# generator are refused instead of silently mixed in. 2: the drawn duodenal C-loop hugs the head.
GENERATOR_VERSION = 2


@dataclass
class SynthesisConfig:
    """What to make. Defaults are a clinical pancreas-protocol grid; `coarse()` is for stage-1 training."""

    spacing_mm: float = 0.8  # in-plane output spacing
    slice_thickness_mm: float = 2.5
    work_spacing_mm: float = 1.6  # in-plane working grid (body filling, attenuation, blur)
    z_margin_mm: tuple[float, float] = (60.0, 80.0)  # margin above/below the pancreas, drawn per case
    phases: tuple[Phase, ...] = PHASE_ORDER
    p_tumour: float = 0.8
    tumour_count_probs: tuple[float, ...] = (0.85, 0.12, 0.03)  # 1, 2, 3 tumours when there is one
    domain_randomise: bool = False
    misalign_max_mm: float = 4.0
    misalign_max_deg: float = 2.0
    secondary_signs: bool = True
    anatomy_augment: bool = True  # random scaling (+-8 %) and rotation about z (+-5 deg)
    keep_organ_labels: bool = False  # also return the full organ map on the venous grid
    noise: bool = True

    @classmethod
    def coarse(cls, **overrides) -> SynthesisConfig:
        """Fast low-resolution cases (2 mm, 3 mm slices, smaller z margin) for stage-1 training."""
        base = dict(spacing_mm=2.0, slice_thickness_mm=3.0, work_spacing_mm=2.0, z_margin_mm=(35.0, 45.0))
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["phases"] = [p.value for p in self.phases]
        out["z_margin_mm"] = list(self.z_margin_mm)
        out["tumour_count_probs"] = list(self.tumour_count_probs)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SynthesisConfig:
        """The inverse of `to_dict` (e.g. a dataset.json's record); keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)} & data.keys()
        values = {k: data[k] for k in known}
        if "phases" in values:
            values["phases"] = tuple(Phase(p) for p in values["phases"])
        for key in ("z_margin_mm", "tumour_count_probs"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class SyntheticCase:
    """Phases (int16 HU) on one grid, ground truth on the venous grid, and what was done."""

    phases: dict[Phase, sitk.Image]
    labels: sitk.Image  # uint8: 0 background, 1 pancreas, 2 tumour (venous grid)
    tumours: list[TumourFacts]
    misalignment: dict[Phase, dict]
    meta: dict
    organs: sitk.Image | None = None  # `Organ` map on the venous grid when asked for
    transforms: dict[Phase, sitk.Euler3DTransform] = field(default_factory=dict)


def _streams(seed: int, case_index: int) -> dict[str, np.random.Generator]:
    names = (
        "anatomy",
        "body",
        "tumour",
        "hu",
        "misalign_a",
        "misalign_d",
        "noise_a",
        "noise_v",
        "noise_d",
        "dr_a",
        "dr_v",
        "dr_d",
    )
    children = np.random.SeedSequence([int(seed), int(case_index), 0x5EED]).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _augmentation(rng: np.random.Generator, centre: np.ndarray, enabled: bool) -> tuple[sitk.Transform, dict]:
    """Case <- anatomy transform for sitk.Resample (output point -> anatomy point), and its record."""
    scale = rng.uniform(0.92, 1.08, size=3) if enabled else np.ones(3)
    angle = rng.uniform(-5.0, 5.0) if enabled else 0.0
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    forward = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(scale)
    tr = sitk.AffineTransform(3)
    tr.SetMatrix(np.linalg.inv(forward).ravel().tolist())
    tr.SetCenter(centre.tolist())
    return tr, {"scale": [round(float(v), 4) for v in scale], "rotation_z_deg": round(float(angle), 3)}


def _forward(points: np.ndarray, tr: sitk.AffineTransform) -> np.ndarray:
    inv = np.linalg.inv(np.asarray(tr.GetMatrix()).reshape(3, 3))
    centre = np.asarray(tr.GetCenter())
    return (points - centre) @ inv.T + centre


def _resample(
    image: sitk.Image, grid: Grid, tr: sitk.Transform, interp: int, default: float, pixel: int
) -> sitk.Image:
    return sitk.Resample(image, grid.reference(pixel), tr, interp, default, pixel)


def _misalignment(
    rng: np.random.Generator, centre: np.ndarray, cfg: SynthesisConfig
) -> tuple[sitk.Transform, dict]:
    m, d = cfg.misalign_max_mm, cfg.misalign_max_deg
    t = rng.uniform(-1, 1, size=3) * np.array([0.5 * m, 0.5 * m, m])  # breathing: mostly cranio-caudal
    r = rng.uniform(-d, d, size=3)
    tr = sitk.Euler3DTransform(centre.tolist(), *np.radians(r).tolist(), t.tolist())
    return tr, {
        "translation_mm": [round(float(v), 4) for v in t],
        "rotation_deg": [round(float(v), 4) for v in r],
        "center_mm": [round(float(v), 3) for v in centre],
        "convention": TRANSFORM_CONVENTION,
    }


def _noise_field(rng: np.random.Generator, shape: tuple[int, ...], sd: float, sigma_vox: float) -> np.ndarray:
    """Smoothed white noise with standard deviation `sd` (in-plane correlation, as CT noise has)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    ndi.gaussian_filter(noise, (0, sigma_vox, sigma_vox), output=noise, truncate=3.0)
    radius = int(3.0 * sigma_vox + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_vox) ** 2)
    w /= w.sum()
    noise *= sd / float((w**2).sum())
    return noise


def _composite(
    array: np.ndarray,
    grid: Grid,
    insert: Insert,
    phase: Phase,
    inverse: sitk.Transform | None,
    margin_mm: float,
) -> None:
    """Blend an insert into a phase: value*f + image*(1-f), moved with the phase's misalignment."""
    p = PHASE_ORDER.index(phase)
    value = insert.hu[p] + (insert.offset if insert.offset is not None else 0.0)
    if inverse is None:
        f, target = insert.fraction, insert.slices
    else:
        centre = (np.asarray(insert.grid.origin) + np.asarray(insert.grid.upper)) / 2
        half = (np.asarray(insert.grid.upper) - np.asarray(insert.grid.origin)) / 2 + margin_mm
        box, target = grid.box_around(centre, half)
        f = sitk.GetArrayFromImage(
            _resample(
                insert.grid.image(insert.fraction), box, inverse, sitk.sitkLinear, 0.0, sitk.sitkFloat32
            )
        )
        value_img = insert.grid.image(np.broadcast_to(value, insert.fraction.shape).astype(np.float32))
        value = sitk.GetArrayFromImage(
            _resample(value_img, box, inverse, sitk.sitkLinear, float(insert.hu[p]), sitk.sitkFloat32)
        )
    region = array[target]
    region += f * (value - region)


def synthesize_case(
    anatomy: Anatomy, config: SynthesisConfig | None = None, seed: int = 0, case_index: int = 0
) -> SyntheticCase:
    """Make one case from `anatomy`; deterministic in (anatomy, config, seed, case_index)."""
    cfg = config or SynthesisConfig()
    rs = _streams(seed, case_index)
    panc = anatomy.points_mm(Organ.PANCREAS)
    centre = panc.mean(axis=0)
    aug, aug_record = _augmentation(rs["anatomy"], centre, cfg.anatomy_augment)
    panc_case = _forward(panc, aug)
    margin = rs["anatomy"].uniform(*cfg.z_margin_mm, size=2)
    z_lo, z_hi = panc_case[:, 2].min() - margin[0], panc_case[:, 2].max() + margin[1]
    organs_case = _forward(anatomy.points_mm(None, step=3), aug)
    organs_case = organs_case[(organs_case[:, 2] >= z_lo) & (organs_case[:, 2] <= z_hi)]
    lo = np.array([organs_case[:, 0].min() - 130, organs_case[:, 1].min() - 100, z_lo])
    hi = np.array([organs_case[:, 0].max() + 130, organs_case[:, 1].max() + 160, z_hi])
    provisional = Grid.from_bounds(lo, hi, (4.0, 4.0, 4.0))
    coarse = sitk.GetArrayFromImage(
        _resample(anatomy.labels, provisional, aug, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    plan = plan_body(coarse, provisional, rs["body"])

    # Working grid: the body's box; organ map, body tissues, tumour plans, attenuation.
    blo, bhi = plan.bounds()
    wz = min(cfg.slice_thickness_mm, 2.5)
    work = Grid.from_bounds(
        np.array([blo[0] - 6, blo[1] - 6, z_lo]),
        np.array([bhi[0] + 6, bhi[1] + 6, z_hi]),
        (cfg.work_spacing_mm, cfg.work_spacing_mm, wz),
    )
    labels_w = sitk.GetArrayFromImage(
        _resample(anatomy.labels, work, aug, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    render_body(labels_w, work, plan, rs["body"])
    pmask = labels_w == Organ.PANCREAS
    if pmask.sum() < 20:
        raise ValueError(f"The pancreas of {anatomy.name} is too small on the working grid.")
    idx = np.argwhere(pmask)
    panc_pts = np.asarray(work.origin) + idx[:, ::-1] * np.asarray(work.spacing)
    line = pancreas_centreline(panc_pts)
    box = tuple(
        slice(max(a - 1, 0), b + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0) + 1, strict=True)
    )
    depth = ndi.distance_transform_edt(np.pad(pmask[box], 1), sampling=work.spacing[::-1])[1:-1, 1:-1, 1:-1]
    depth = depth[pmask[box]]
    rt = rs["tumour"]
    count = 0
    if rt.uniform() < cfg.p_tumour:
        probs = np.asarray(cfg.tumour_count_probs, dtype=np.float64)
        count = 1 + int(rt.choice(len(probs), p=probs / probs.sum()))
    plans = plan_tumours(rt, count, panc_pts, depth, line, cfg.secondary_signs)
    apply_atrophy(plans, labels_w, work, line)
    table = sample_hu_table(rs["hu"], cfg.domain_randomise)
    fields = texture_fields(rs["hu"], work)

    # Output (venous) grid: pancreas from the interpolated indicator, then tumours and ducts.
    extent = np.asarray(work.upper) - np.asarray(work.origin)
    fine_spacing = (cfg.spacing_mm, cfg.spacing_mm, cfg.slice_thickness_mm)
    fine = Grid(
        work.origin,
        fine_spacing,
        tuple(int(v) for v in (np.floor(extent / np.asarray(fine_spacing)) + 1)[::-1]),
    )
    labels_f = np.zeros(fine.shape, dtype=np.uint8)
    _pancreas_label(labels_w, work, labels_f, fine, _blur_sigma(anatomy, cfg, NOMINAL_PSF_MM, wz))
    tumour_inserts: list[tuple[Insert, object]] = []
    for plan_t in plans:
        insert = realise_tumour(plan_t, rt, fine, labels_f, labels_w, work, table.tumour)
        if insert is not None:
            tumour_inserts.append((insert, plan_t))
    duct_of = {i: duct_insert(p, line, fine, labels_f, table.duct) for i, (_, p) in enumerate(tumour_inserts)}
    ducts = [d for d in duct_of.values() if d is not None]
    inserts = ducts + [ins for ins, _ in tumour_inserts]

    transforms: dict[Phase, sitk.Transform] = {}
    misalignment: dict[Phase, dict] = {}
    for phase in cfg.phases:
        if phase == Phase.VENOUS:
            transforms[phase] = sitk.Euler3DTransform(centre.tolist(), 0, 0, 0, (0, 0, 0))
            misalignment[phase] = {
                "translation_mm": [0.0, 0.0, 0.0],
                "rotation_deg": [0.0, 0.0, 0.0],
                "center_mm": [round(float(v), 3) for v in centre],
                "reference": True,
                "convention": TRANSFORM_CONVENTION,
            }
        else:
            key = "misalign_a" if phase == Phase.ARTERIAL else "misalign_d"
            transforms[phase], misalignment[phase] = _misalignment(rs[key], line.points.mean(axis=0), cfg)
    # Partial-volume blur: the scanner's PSF and slice profile, and at least half the anatomy map's own
    # voxel, so organ edges are smooth rather than staircased when a 2 mm map is drawn at 0.8 mm.
    sigma = _blur_sigma(anatomy, cfg, table.psf_mm, wz)
    move_margin = cfg.misalign_max_mm * 1.5 + 2.0
    images: dict[Phase, sitk.Image] = {}
    for phase in cfg.phases:
        letter = phase.value[0]
        hu_w = mean_map(labels_w, table, phase, fields)
        ndi.gaussian_filter(hu_w, sigma, output=hu_w, truncate=3.0)
        inverse = None if phase == Phase.VENOUS else transforms[phase].GetInverse()
        moved = _resample(
            work.image(hu_w), fine, inverse or sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32
        )
        del hu_w
        arr = sitk.GetArrayFromImage(moved)
        for insert in inserts:
            _composite(arr, fine, insert, phase, inverse, move_margin)
        if table.domain_randomised:
            arr = apply_domain_randomisation(arr, fine, table, phase, rs[f"dr_{letter}"])
        if cfg.noise:
            arr += _noise_field(
                rs[f"noise_{letter}"],
                fine.shape,
                float(table.noise_sd[PHASE_ORDER.index(phase)]),
                0.7 * 0.8 / cfg.spacing_mm,
            )
        np.clip(arr, -1024, 3071, out=arr)
        images[phase] = fine.image(np.rint(arr).astype(np.int16))

    facts = _facts(tumour_inserts, duct_of, labels_f, labels_w, work, fine, table)
    organs = _organ_map(labels_w, work, fine, labels_f, ducts) if cfg.keep_organ_labels else None
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "case_index": int(case_index),
        "anatomy": anatomy.name,
        "anatomy_source": anatomy.source,
        "anatomy_notes": list(anatomy.notes),
        "augmentation": aug_record,
        "hu_table": table.to_dict(),
        "config": cfg.to_dict(),
        "grid": {
            "origin_mm": list(fine.origin),
            "spacing_mm": list(fine.spacing),
            "shape_zyx": list(fine.shape),
        },
        "body": {"subcutaneous_fat_mm": round(float(np.mean(plan.fat_mm)), 1)},
        "pancreas_volume_ml": round(float((labels_f > 0).sum() * fine.voxel_ml), 2),
    }
    return SyntheticCase(
        phases=images,
        labels=fine.image(labels_f),
        tumours=facts,
        misalignment=misalignment,
        meta=meta,
        organs=organs,
        transforms=transforms,
    )


def _blur_sigma(
    anatomy: Anatomy, cfg: SynthesisConfig, psf_mm: float, wz: float
) -> tuple[float, float, float]:
    """Working-grid (z, y, x) sigma of the partial-volume blur: the scanner's PSF and slice profile, and
    at least about half the anatomy map's and the working grid's voxel, so a 2 mm map drawn at 0.8 mm has
    smooth organ edges, not staircases. The label uses a nominal PSF, so that randomised intensities never
    change the ground truth."""
    sx, sy, sz = anatomy.labels.GetSpacing()
    floor = 0.45 * cfg.work_spacing_mm
    return (
        max(cfg.slice_thickness_mm / 2.355, 0.45 * sz) / wz,
        max(psf_mm, 0.5 * sy, floor) / cfg.work_spacing_mm,
        max(psf_mm, 0.5 * sx, floor) / cfg.work_spacing_mm,
    )


def _pancreas_label(
    labels_w: np.ndarray, work: Grid, labels_f: np.ndarray, fine: Grid, sigma: tuple[float, float, float]
) -> None:
    """Label 1 where the blurred, interpolated pancreas indicator is >= 0.5: the label follows the same
    edge as the intensities."""
    sl = ndi.find_objects((labels_w == Organ.PANCREAS).astype(np.uint8))[0]
    lo = np.array([max(s.start - 2, 0) for s in sl])
    hi = np.array([min(s.stop + 2, n) for s, n in zip(sl, labels_w.shape, strict=True)])
    box_w, sl_w = work.sub(lo, hi)
    indicator = ndi.gaussian_filter(
        (labels_w[sl_w] == Organ.PANCREAS).astype(np.float32), sigma, truncate=3.0
    )
    indicator = box_w.image(indicator)
    box_f, sl_f = fine.sub(fine.index_of(np.asarray(box_w.origin)), fine.index_of(box_w.upper) + 1)
    values = sitk.GetArrayFromImage(
        _resample(indicator, box_f, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    )
    labels_f[sl_f][values >= 0.5] = 1


def _facts(tumour_inserts, duct_of, labels_f, labels_w, work, fine, table) -> list[TumourFacts]:
    facts = []
    for i, (insert, plan_t) in enumerate(tumour_inserts):
        mask = (insert.fraction >= 0.5) & (labels_f[insert.slices] == 2)
        if not mask.any():
            continue
        idx = np.argwhere(mask)
        centre = np.asarray(insert.grid.origin) + idx.mean(axis=0)[::-1] * np.asarray(fine.spacing)
        in_panc = _sample_nearest((labels_w == Organ.PANCREAS), work, insert.grid)[mask]
        facts.append(
            TumourFacts(
                index=i + 1,
                region=plan_t.region,
                requested_volume_ml=plan_t.requested_ml,
                volume_ml=float(mask.sum() * fine.voxel_ml),
                centre_mm=tuple(float(v) for v in centre),
                longest_axial_diameter_mm=longest_axial_diameter(mask, insert.grid),
                tumour_hu={p.value: round(float(table.tumour[j]), 1) for j, p in enumerate(PHASE_ORDER)},
                parenchyma_hu={p.value: round(table.hu(p, Organ.PANCREAS), 1) for p in PHASE_ORDER},
                outside_pancreas_fraction=float(1.0 - in_panc.mean()),
                necrotic=plan_t.necrotic,
                duct_dilation_mm=plan_t.duct_mm if duct_of.get(i) is not None else None,
                atrophy_mm=plan_t.atrophy_mm,
            )
        )
    return facts


def _organ_map(labels_w, work: Grid, fine: Grid, labels_f: np.ndarray, ducts: list[Insert]) -> sitk.Image:
    organs = sitk.GetArrayFromImage(
        _resample(work.image(labels_w), fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    organs[(organs == Organ.PANCREAS) & (labels_f == 0)] = Organ.FAT
    organs[labels_f == 1] = Organ.PANCREAS
    for duct in ducts:
        region = organs[duct.slices]
        region[(duct.fraction >= 0.5) & (labels_f[duct.slices] == 1)] = Organ.PANCREATIC_DUCT
    organs[labels_f == 2] = Organ.TUMOUR
    return fine.image(organs)
