"""Pancreatic ductal adenocarcinomas inserted into the gland: size, shape, place, contrast, signs.

Volumes follow the PANORAMA quartiles (1.1 / 4.0 / 6.7 / 15.4 / 67.7 mL, log-linear between them,
so about one tumour in ten is under 2 mL). A shape is a union of two to four ellipsoids, the main
one along the gland, displaced by a smooth random field (lobulated, irregular margins), scaled so
that the labelled volume on the output grid matches the drawn volume. It may replace the gland
and bulge into the surrounding fat by a few millimetres, never into vessels or other organs.
The intensity boundary is soft (a linear ramp over `edge_mm`), the label exact: label 2 where the
tumour fraction is >= 0.5. Optional secondary signs: a dilated main duct and parenchymal atrophy
upstream (towards the tail) of the tumour.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from PancreasAILib.synthesis.anatomy import Organ
from PancreasAILib.synthesis.centreline import REGIONS, Centreline, region_of
from PancreasAILib.synthesis.grid import Grid, smooth_noise
from PancreasAILib.synthesis.shapes import _capsule_value, rotation

PANORAMA_VOLUME_QUANTILES_ML: tuple[float, ...] = (1.1, 4.0, 6.7, 15.4, 67.7)
REGION_PROBABILITIES: tuple[float, float, float] = (0.6, 0.25, 0.15)  # head, body, tail
ALLOWED = (Organ.PANCREAS, Organ.FAT, Organ.SMALL_VESSEL, Organ.BACKGROUND)


def sample_tumour_volume(rng: np.random.Generator) -> float:
    """A volume (mL) whose quantiles are the PANORAMA min, quartiles and max."""
    q = np.log(PANORAMA_VOLUME_QUANTILES_ML)
    return float(np.exp(np.interp(rng.uniform(), np.linspace(0, 1, len(q)), q)))


@dataclass
class TumourShape:
    """Implicit shape: unit-scale ellipsoid union plus a smooth displacement, then scaled and placed."""

    centre: np.ndarray
    axes: np.ndarray  # columns: unit frame in world
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # offset, radii, rotation (unit frame)
    waves: np.ndarray  # (J, 3) angular frequencies (unit frame)
    wave_phase: np.ndarray  # (J,)
    roughness: float
    scale: float = 1.0

    def sdf(self, grid: Grid, scale: float | None = None) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) on every voxel of `grid`."""
        s = self.scale if scale is None else scale
        X, Y, Z = grid.mesh()
        d = (X - self.centre[0], Y - self.centre[1], Z - self.centre[2])
        u = [(d[0] * self.axes[0, k] + d[1] * self.axes[1, k] + d[2] * self.axes[2, k]) / s for k in range(3)]
        q = None
        for offset, radii, rot in self.parts:
            acc = 0.0
            for k in range(3):
                v = (
                    (u[0] - offset[0]) * rot[0, k]
                    + (u[1] - offset[1]) * rot[1, k]
                    + (u[2] - offset[2]) * rot[2, k]
                ) / radii[k]
                acc = acc + v * v
            part = np.sqrt(acc)
            q = part if q is None else np.minimum(q, part)
        noise = 0.0
        for w, ph in zip(self.waves, self.wave_phase, strict=True):
            noise = noise + np.sin(u[0] * w[0] + u[1] * w[1] + u[2] * w[2] + ph)
        q = q + self.roughness * noise / np.sqrt(len(self.waves))
        return ((q - 1.0) * s).astype(np.float32)


def random_shape(rng: np.random.Generator, centre: np.ndarray, along: np.ndarray) -> TumourShape:
    along = along / (np.linalg.norm(along) + 1e-9)
    tilt = rotation(rng.normal(0, 15.0, size=3))
    a0 = tilt @ along
    helper = np.array([0.0, 0.0, 1.0]) if abs(a0[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a1 = np.cross(a0, helper)
    a1 /= np.linalg.norm(a1)
    axes = np.stack([a0, a1, np.cross(a0, a1)], axis=1)
    elong = rng.uniform(1.0, 1.5)
    parts = [(np.zeros(3), np.array([elong, 1.0, rng.uniform(0.75, 1.0)]), np.eye(3))]
    for _ in range(rng.integers(1, 4)):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        parts.append(
            (
                direction * rng.uniform(0.3, 0.65),
                rng.uniform(0.35, 0.7, size=3),
                rotation(rng.uniform(-180, 180, size=3)),
            )
        )
    n_waves = 6
    dirs = rng.normal(size=(n_waves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    waves = dirs * rng.uniform(2.5, 6.0, size=(n_waves, 1))
    return TumourShape(
        centre=np.asarray(centre, float),
        axes=axes,
        parts=parts,
        waves=waves,
        wave_phase=rng.uniform(0, 2 * np.pi, n_waves),
        roughness=float(rng.uniform(0.08, 0.2)),
    )


@dataclass
class TumourPlan:
    region: str
    requested_ml: float
    shape: TumourShape
    centreline_index: int
    necrotic: bool
    edge_mm: float
    duct_mm: float | None = None
    atrophy_mm: float | None = None


@dataclass
class Insert:
    """A soft inclusion on a box of the fine venous grid: fraction 0..1 and HU per phase."""

    grid: Grid
    slices: tuple[slice, ...]
    fraction: np.ndarray
    hu: np.ndarray  # (3,) base HU per phase
    offset: np.ndarray | None = None  # spatial HU offset added in every phase (texture, necrosis)


@dataclass
class TumourFacts:
    """What a reader of the dataset needs to know about one inserted tumour."""

    index: int
    region: str
    requested_volume_ml: float
    volume_ml: float
    centre_mm: tuple[float, float, float]
    longest_axial_diameter_mm: float
    tumour_hu: dict[str, float]
    parenchyma_hu: dict[str, float]
    outside_pancreas_fraction: float
    necrotic: bool
    duct_dilation_mm: float | None = None
    atrophy_mm: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in (
            "requested_volume_ml",
            "volume_ml",
            "longest_axial_diameter_mm",
            "outside_pancreas_fraction",
        ):
            out[key] = round(float(out[key]), 3)
        out["centre_mm"] = [round(float(v), 2) for v in self.centre_mm]
        return out


def plan_tumours(
    rng: np.random.Generator,
    count: int,
    pancreas_pts: np.ndarray,
    pancreas_depth: np.ndarray,
    line: Centreline,
    secondary_signs: bool,
) -> list[TumourPlan]:
    """Pick region, centre (deep in the gland), orientation, volume and signs for `count` tumours."""
    _, frac = line.project(pancreas_pts)
    regions = region_of(frac)
    plans: list[TumourPlan] = []
    for _ in range(count):
        for _attempt in range(10):
            volume = sample_tumour_volume(rng)
            r_eq = (3 * volume * 1000 / (4 * np.pi)) ** (1 / 3)
            region = int(rng.choice(3, p=REGION_PROBABILITIES))
            cand = np.nonzero(regions == region)[0]
            if len(cand) == 0:
                cand = np.arange(len(pancreas_pts))
            depth = pancreas_depth[cand]
            cand = cand[depth >= 0.5 * depth.max()]
            w = pancreas_depth[cand] ** 2
            pick = cand[rng.choice(len(cand), p=w / w.sum())]
            centre = pancreas_pts[pick] + rng.uniform(-0.5, 0.5, size=3)
            if all(
                np.linalg.norm(centre - p.shape.centre)
                > r_eq + (3 * p.requested_ml * 1000 / (4 * np.pi)) ** (1 / 3) + 4
                for p in plans
            ):
                break
        else:
            continue
        idx, _ = line.project(centre[None])
        shape = random_shape(rng, centre, line.tangent(int(idx[0])))
        shape.scale = r_eq
        signs = secondary_signs and region < 2 and rng.uniform() < 0.6
        plans.append(
            TumourPlan(
                region=REGIONS[region],
                requested_ml=volume,
                shape=shape,
                centreline_index=int(idx[0]),
                necrotic=bool(volume > 8 and rng.uniform() < 0.5),
                edge_mm=float(rng.uniform(0.6, 1.8)),
                duct_mm=float(rng.uniform(1.5, 3.5)) if signs else None,
                atrophy_mm=float(rng.uniform(1.5, 4.0)) if signs and rng.uniform() < 0.7 else None,
            )
        )
    return plans


def upstream_fraction(plan: TumourPlan, line: Centreline) -> float:
    """Arc-length fraction where the gland upstream (towards the tail) of the tumour begins."""
    s = line.arclength[plan.centreline_index] + 0.8 * plan.shape.scale
    return float(s / max(line.length_mm, 1e-6))


def apply_atrophy(plans: list[TumourPlan], labels: np.ndarray, grid: Grid, line: Centreline) -> None:
    """Thin the gland upstream of tumours that have atrophy: its outer shell becomes fat."""
    for plan in plans:
        if plan.atrophy_mm is None:
            continue
        mask = labels == Organ.PANCREAS
        sl = ndi.find_objects(mask.astype(np.uint8))[0]
        sub = mask[sl]
        depth = ndi.distance_transform_edt(sub, sampling=grid.spacing[::-1])
        idx = np.argwhere(sub)
        pts = np.asarray(grid.origin) + (idx + [s.start for s in sl])[:, ::-1] * np.asarray(grid.spacing)
        _, frac = line.project(pts)
        upstream = frac > upstream_fraction(plan, line)
        shell = depth[tuple(idx.T)] <= plan.atrophy_mm
        thin = idx[upstream & shell & (depth[tuple(idx.T)] < depth.max() * 0.8)]
        region = labels[sl]
        region[tuple(thin.T)] = Organ.FAT


def _sample_nearest(work: np.ndarray, work_grid: Grid, box: Grid) -> np.ndarray:
    """Values of a working-grid array at the voxel centres of a (finer) box grid."""
    idx = []
    for a, n in enumerate(box.shape[::-1]):
        coords = box.origin[a] + np.arange(n) * box.spacing[a]
        idx.append(
            np.clip(
                np.round((coords - work_grid.origin[a]) / work_grid.spacing[a]).astype(int),
                0,
                work_grid.shape[2 - a] - 1,
            )
        )
    return work[idx[2][:, None, None], idx[1][None, :, None], idx[0][None, None, :]]


def _sample_linear(work: np.ndarray, work_grid: Grid, box: Grid) -> np.ndarray:
    """Linear interpolation of a float working-grid array at the voxel centres of a box grid."""
    return sitk.GetArrayFromImage(
        sitk.Resample(
            work_grid.image(work),
            box.reference(sitk.sitkFloat32),
            sitk.Transform(),
            sitk.sitkLinear,
            0.0,
            sitk.sitkFloat32,
        )
    )


def realise_tumour(
    plan: TumourPlan,
    rng: np.random.Generator,
    fine_grid: Grid,
    fine_labels: np.ndarray,
    work_labels: np.ndarray,
    work_grid: Grid,
    hu: np.ndarray,
) -> Insert | None:
    """Fit the scale to the requested volume within the allowed region, label it 2, return its insert."""
    shape = plan.shape
    r_eq = (3 * plan.requested_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    bulge = float(np.clip(0.3 * r_eq, 2.5, 8.0))
    half = 2.1 * 1.8 * r_eq + 4
    wbox, wsl = work_grid.box_around(shape.centre, half + bulge + 4)
    wlab = work_labels[wsl]
    near = ndi.distance_transform_edt(wlab != Organ.PANCREAS, sampling=work_grid.spacing[::-1]) <= bulge
    lut = np.zeros(256, dtype=bool)
    lut[list(ALLOWED)] = True
    # Smooth the allowed region before sampling it finely, so a tumour abutting an organ has the
    # organ's smooth edge rather than the working grid's staircase.
    allowed_w = ndi.gaussian_filter((lut[wlab] & near).astype(np.float32), 0.8)

    def volume(scale: float, grid: Grid) -> tuple[float, Grid, tuple[slice, ...], np.ndarray, np.ndarray]:
        box, sl = grid.box_around(shape.centre, 2.1 * scale + plan.edge_mm + 2)
        sdf = shape.sdf(box, scale)
        allowed = _sample_linear(allowed_w, wbox, box) >= 0.5
        if grid is fine_grid:
            allowed &= fine_labels[sl] != 2
        inside = (sdf <= 0) & allowed
        return float(inside.sum()) * grid.voxel_ml, box, sl, sdf, allowed

    coarse = Grid(
        fine_grid.origin,
        tuple(s * f for s, f in zip(fine_grid.spacing, (2, 2, 1), strict=True)),
        tuple(max(1, n // f) for n, f in zip(fine_grid.shape, (1, 2, 2), strict=True)),
    )
    scale, target = r_eq, plan.requested_ml

    def next_scale(v: float) -> float:
        step = 1.5 if v <= 0 else float(np.clip((target / v) ** (1 / 3), 0.7, 1.5))
        return min(scale * step, 1.8 * r_eq)

    for _ in range(6):  # search on a grid twice as coarse in-plane, then correct on the output grid
        v = volume(scale, coarse)[0]
        if v > 0 and abs(v - target) / target < 0.02:
            break
        scale = next_scale(v)
    v, box, sl, sdf, allowed = volume(scale, fine_grid)
    for _ in range(2):
        if v > 0 and abs(v - target) / target < 0.02:
            break
        scale = next_scale(v)
        v, box, sl, sdf, allowed = volume(scale, fine_grid)
    shape.scale = scale
    if v <= 0:
        return None
    fraction = np.clip(0.5 - sdf / (2 * plan.edge_mm), 0, 1) * allowed
    inside = (sdf <= 0) & allowed
    region = fine_labels[sl]
    region[inside] = 2
    offset = 6.0 * smooth_noise(rng, box, 2.0)
    if plan.necrotic:
        offset -= rng.uniform(15, 30) * np.clip(-sdf / (0.5 * scale) - 0.8, 0, 1)
    return Insert(
        grid=box,
        slices=sl,
        fraction=fraction.astype(np.float32),
        hu=np.asarray(hu, np.float32),
        offset=offset.astype(np.float32),
    )


def duct_insert(
    plan: TumourPlan, line: Centreline, fine_grid: Grid, fine_labels: np.ndarray, hu: float
) -> Insert | None:
    """A dilated main duct from the tumour to the tail, inside the parenchyma (label 1)."""
    if plan.duct_mm is None:
        return None
    frac = line.arclength / max(line.length_mm, 1e-6)
    sel = np.nonzero(frac > upstream_fraction(plan, line) - 0.02)[0]
    if len(sel) < 2:
        return None
    path = line.points[sel]
    radii = np.linspace(plan.duct_mm, 0.6 * plan.duct_mm, len(path))
    lo, hi = path.min(axis=0) - plan.duct_mm - 3, path.max(axis=0) + plan.duct_mm + 3
    box, sl = fine_grid.sub(fine_grid.index_of(lo), fine_grid.index_of(hi) + 1)
    if min(box.shape) == 0:
        return None
    dist = np.full(box.shape, np.inf, dtype=np.float32)
    for i in range(len(path) - 1):
        dist = np.minimum(dist, _capsule_value(box, path[i], path[i + 1], radii[i], radii[i + 1]))
    fraction = np.clip(0.5 - dist / 1.0, 0, 1) * (fine_labels[sl] == 1)
    if not fraction.any():
        return None
    return Insert(grid=box, slices=sl, fraction=fraction.astype(np.float32), hu=np.full(3, hu, np.float32))


def longest_axial_diameter(mask: np.ndarray, grid: Grid) -> float:
    """Largest in-plane Feret diameter (mm) over slices, counting the voxel width."""
    best = 0.0
    sx, sy = grid.spacing[0], grid.spacing[1]
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        pts = np.argwhere(mask[k])[:, ::-1] * np.array([sx, sy])
        if len(pts) > 3:
            with contextlib.suppress(QhullError):  # collinear points: keep them all
                pts = pts[ConvexHull(pts).vertices]
        d = np.sqrt(((pts[:, None, :] - pts[None]) ** 2).sum(-1)).max() if len(pts) > 1 else 0.0
        best = max(best, float(d) + 0.5 * (sx + sy))
    return best
