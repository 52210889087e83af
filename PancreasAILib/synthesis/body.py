"""Fill the unlabelled body around the annotated organs.

Organ maps label a dozen organs and leave the rest 0; a CT has skin, subcutaneous fat, an
abdominal wall, a spine dorsal to the aorta, psoas and paraspinal muscles, ribs, lung bases above
the diaphragm, gas- and fluid-filled bowel in visceral fat, and air outside. `plan_body` describes
the body analytically per height (outline radius per angle around a centre, spine position,
layer thicknesses) from a coarse look at the organs; `render_body` paints that plan, and the
tissues inside hollow organs, onto any grid. Painting only ever fills unassigned voxels:
annotated organs always win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from PancreasAILib.synthesis.anatomy import Organ
from PancreasAILib.synthesis.centreline import vertical_track
from PancreasAILib.synthesis.grid import Grid, smooth_noise

N_THETA = 72
BG = Organ.BACKGROUND
SPINE_OVER = (BG, Organ.ARTERY, Organ.RENAL_VEIN)  # bone wins over vessels drawn by `completion`
VESSELS = (Organ.AORTA, Organ.IVC, Organ.PORTAL_SPLENIC_VEIN, Organ.ARTERY, Organ.RENAL_VEIN)
DIAPHRAGM_ORGANS = (
    Organ.LIVER,
    Organ.SPLEEN,
    Organ.STOMACH,
    Organ.KIDNEY_L,
    Organ.KIDNEY_R,
    Organ.ADRENAL_L,
    Organ.ADRENAL_R,
)


@dataclass
class BodyPlan:
    """The body as functions of height z (mm); angles theta = atan2(y - cy, x - cx), 72 bins."""

    z: np.ndarray  # (nz,)
    centre: np.ndarray  # (nz, 2) x, y
    radius: np.ndarray  # (nz, N_THETA) skin radius
    spine: np.ndarray  # (nz, 2) vertebral body centre
    fat_mm: np.ndarray  # (N_THETA,) subcutaneous fat
    muscle_mm: np.ndarray  # (N_THETA,) abdominal wall muscle
    vertebra_mm: tuple[float, float]  # vertebral body half-width, half-depth
    vertebra_period_mm: float
    vertebra_phase_mm: float
    kidney_top_z: float
    rib_phase_mm: float
    bowel_fraction: float
    bowel_air_fraction: float

    def at(self, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, radius per angle and spine centre at height z (held constant beyond the ends)."""
        i = np.interp(z, self.z, np.arange(len(self.z)))
        lo = int(np.floor(i))
        hi = min(lo + 1, len(self.z) - 1)
        w = i - lo
        mix = lambda a: (1 - w) * a[lo] + w * a[hi]  # noqa: E731
        return mix(self.centre), mix(self.radius), mix(self.spine)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical (x, y) box of the skin over all heights."""
        theta = _theta_centres()
        xs = self.centre[:, :1] + self.radius * np.cos(theta)[None]
        ys = self.centre[:, 1:] + self.radius * np.sin(theta)[None]
        return np.array([xs.min(), ys.min()]), np.array([xs.max(), ys.max()])


def _theta_centres() -> np.ndarray:
    return -np.pi + (np.arange(N_THETA) + 0.5) * (2 * np.pi / N_THETA)


def _circular_smooth(a: np.ndarray, sigma: float, axis: int = -1) -> np.ndarray:
    return ndi.gaussian_filter1d(a, sigma, axis=axis, mode="wrap")


def plan_body(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> BodyPlan:
    """Plan the body from a coarse organ map: big enough to hold every organ, smooth in z."""
    z = grid.axes()[2].astype(np.float64)
    pts = lambda organ: _points(labels, grid, organ)  # noqa: E731
    sx, sy, sz = grid.spacing
    aorta = vertical_track(pts(Organ.AORTA), sz, sx * sy)
    kid = [pts(o) for o in (Organ.KIDNEY_R, Organ.KIDNEY_L)]
    organ_pts = _points(labels, grid, None)
    if aorta is not None:
        axy, ar = aorta.at(z)
    else:  # no aorta: put it just in front of the kidneys' centre
        ref = np.vstack([k for k in kid if len(k)]) if any(len(k) for k in kid) else organ_pts
        axy = np.tile([ref[:, 0].mean() + 12, ref[:, 1].mean() - 15], (len(z), 1))
        ar = np.full(len(z), 11.0)
    vscale = rng.uniform(0.9, 1.12)
    vx, vy = 22.0 * vscale, 16.0 * vscale
    mid_x = 0.5 * (kid[0][:, 0].mean() + kid[1][:, 0].mean()) if all(len(k) for k in kid) else None
    spine = np.empty((len(z), 2))
    spine[:, 0] = mid_x if mid_x is not None else axy[:, 0] - 12.0
    spine[:, 0] = 0.5 * spine[:, 0] + 0.5 * (axy[:, 0] - 12.0)
    spine[:, 1] = axy[:, 1] + ar + 2.0 + vy
    spine = ndi.gaussian_filter1d(spine, 10.0 / sz, axis=0, mode="nearest")
    centre = np.stack([spine[:, 0], spine[:, 1] - rng.uniform(45, 60)], axis=1)

    theta = _theta_centres()
    fat_base = rng.uniform(6.0, 32.0)
    ant = np.clip(-np.sin(theta), 0, 1)  # 1 anterior
    lat = np.abs(np.cos(theta))
    post = np.clip(np.sin(theta), 0, 1)
    fat = fat_base * (1 + rng.uniform(0.0, 0.5) * ant + rng.uniform(0.0, 0.4) * lat - 0.3 * post)
    fat = _circular_smooth(fat * (1 + 0.15 * _circular_smooth(rng.standard_normal(N_THETA), 4)), 3)
    muscle = rng.uniform(7.0, 12.0) * (1 + 0.4 * lat * (1 - post)) * (1 - 0.3 * post)
    muscle *= 1 - 0.8 * np.exp(-0.5 * ((theta + np.pi / 2) / 0.06) ** 2)  # linea alba

    # Needed radius: every organ voxel and the spine with its muscles, plus wall and fat outside.
    extra = []
    for dx, dy in ((0, 82), (-48, 62), (48, 62), (-62, 25), (62, 25), (-40, 78), (40, 78)):
        extra.append(np.stack([spine[:, 0] + dx * vscale, spine[:, 1] + dy * vscale, z], axis=1))
    allp = np.vstack([organ_pts, *extra])
    zi = np.clip(np.round((allp[:, 2] - z[0]) / sz).astype(int), 0, len(z) - 1)
    dx = allp[:, 0] - centre[zi, 0]
    dy = allp[:, 1] - centre[zi, 1]
    ti = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_THETA).astype(int) % N_THETA
    rho = np.hypot(dx, dy) + fat[ti] + muscle[ti] + 4.0
    need = np.zeros((len(z), N_THETA))
    np.maximum.at(need, (zi, ti), rho)
    need = ndi.maximum_filter(need, size=(1, 7), mode="wrap")
    need = ndi.maximum_filter1d(need, size=max(1, int(50 / sz)), axis=0, mode="nearest")
    floor = 0.88 * need.max(axis=0, keepdims=True)  # the abdomen stays wide where few organs are labelled
    radius = np.maximum(need, floor)
    radius = _circular_smooth(ndi.gaussian_filter1d(radius, 15.0 / sz, axis=0, mode="nearest"), 2.0)
    wobble = ndi.gaussian_filter(
        rng.standard_normal(radius.shape), (20.0 / sz, 4.0), mode=("nearest", "wrap")
    )
    radius *= 1 + 0.03 * wobble / (wobble.std() + 1e-9)
    radius = np.maximum(radius, need)  # smoothing must never cut an organ off
    kt = [k[:, 2].max() for k in kid if len(k)]
    return BodyPlan(
        z=z,
        centre=centre,
        radius=radius,
        spine=spine,
        fat_mm=fat,
        muscle_mm=muscle,
        vertebra_mm=(vx, vy),
        vertebra_period_mm=rng.uniform(32.0, 38.0) * vscale,
        vertebra_phase_mm=rng.uniform(0, 40.0),
        kidney_top_z=float(np.mean(kt)) if kt else float(z.mean()),
        rib_phase_mm=rng.uniform(0, 30.0),
        bowel_fraction=rng.uniform(0.35, 0.6),
        bowel_air_fraction=rng.uniform(0.08, 0.35),
    )


def _points(labels: np.ndarray, grid: Grid, organ: Organ | None) -> np.ndarray:
    mask = labels > 0 if organ is None else labels == organ
    idx = np.argwhere(mask).astype(np.float64)
    return np.asarray(grid.origin) + idx[:, ::-1] * np.asarray(grid.spacing)


def _fill(region: np.ndarray, mask: np.ndarray, organ: Organ, over: tuple[Organ, ...] = (BG,)) -> None:
    """Paint `organ` where `mask` and the current label is one of `over` (by default only unassigned)."""
    free = region == over[0]
    for label in over[1:]:
        free |= region == label
    region[mask & free] = organ


def _render_slice(lab: np.ndarray, plan: BodyPlan, z: float, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Skin, fat, wall muscle, ribs, spine and back muscles on one axial slice; returns depth map."""
    centre, radius, spine = plan.at(z)
    dx, dy = X - centre[0], Y - centre[1]
    rho = np.hypot(dx, dy)
    tpos = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_THETA - 0.5
    t0 = np.floor(tpos).astype(int)
    w = tpos - t0
    ta, tb = t0 % N_THETA, (t0 + 1) % N_THETA
    interp = lambda a: (1 - w) * a[ta] + w * a[tb]  # noqa: E731
    depth = interp(radius) - rho
    fat, muscle = interp(plan.fat_mm), interp(plan.muscle_mm)
    _fill(lab, depth < 0, Organ.AIR)
    _fill(lab, depth < 2.0, Organ.SKIN)
    _fill(lab, depth < fat, Organ.FAT)
    # Ribs: a few oblique cross-sections per side in the wall, above the costal margin (lower at the back).
    sin_t = dy / np.maximum(rho, 1e-6)
    costal = plan.kidney_top_z - 40.0 + 60.0 * np.clip(-sin_t, 0, 1) - 15.0 * np.clip(sin_t, 0, 1)
    arc = np.arctan2(dy, np.abs(dx)) * 28.0  # ribs slope down towards the front
    band = ((z + arc + plan.rib_phase_mm) % 30.0) < 8.0
    in_wall = (depth >= fat + 0.25 * muscle) & (depth < fat + muscle + 3.0)
    _fill(lab, in_wall & band & (z > costal) & (sin_t > -0.8) & (sin_t < 0.85), Organ.RIB)
    _fill(lab, depth < fat + muscle, Organ.MUSCLE)
    # Spine: vertebral body (or disc), canal, posterior arch, spinous and transverse processes.
    vx, vy = plan.vertebra_mm
    u, v = X - spine[0], Y - spine[1]
    phase = (z + plan.vertebra_phase_mm) % plan.vertebra_period_mm
    disc = phase < 8.0
    endplate = (phase < 10.0) | (phase > plan.vertebra_period_mm - 2.0)
    body = (u / vx) ** 2 + (v / vy) ** 2 <= 1.0
    if disc:
        _fill(lab, body, Organ.DISC, SPINE_OVER)
    else:
        inner = (u / (vx - 2.2)) ** 2 + (v / (vy - 2.2)) ** 2 <= 1.0
        _fill(lab, body & (inner & ~endplate), Organ.BONE_TRABECULAR, SPINE_OVER)
        _fill(lab, body, Organ.BONE_CORTICAL, SPINE_OVER)
    cy = vy + 9.0
    canal = (u / 10.0) ** 2 + ((v - cy) / 8.0) ** 2 <= 1.0
    _fill(lab, canal, Organ.SPINAL_CANAL, SPINE_OVER)
    if 10.0 <= phase <= plan.vertebra_period_mm - 4.0:
        arch = ((u / 15.0) ** 2 + ((v - cy) / 13.0) ** 2 <= 1.0) & (v > cy - 7.0) & (np.abs(u) > 5.0) | (
            (np.abs(u) < 6.0) & (v > cy + 7.0) & (v < cy + 13.0)
        )
        spinous = (np.abs(u) < 3.0 - (v - cy) / 30.0) & (v > cy + 8.0) & (v < cy + 38.0)
        mid = abs(phase - plan.vertebra_period_mm / 2) < 5.0
        transverse = mid & (np.abs(v - cy + 1.0) < 3.5 - np.abs(u) / 20.0) & (np.abs(u) < vx + 14.0)
        _fill(lab, arch | spinous | transverse, Organ.BONE_CORTICAL, SPINE_OVER)
    g = np.clip((plan.kidney_top_z - 20.0 - z) / 110.0, 0.2, 1.0)  # psoas grows caudally
    rp = 6.0 + 14.0 * g
    for side in (-1.0, 1.0):
        psoas = ((u - side * (vx + rp * 0.8)) / rp) ** 2 + ((v + 2.0) / (rp * 0.9)) ** 2 <= 1.0
        erector = ((u - side * 24.0) / 25.0) ** 2 + ((v - cy - 22.0) / 22.0) ** 2 <= 1.0
        quadratus = ((u - side * (vx + 2 * rp + 14.0)) / 16.0) ** 2 + ((v - 8.0) / 10.0) ** 2 <= 1.0
        _fill(lab, psoas | erector | (quadratus & (z < plan.kidney_top_z - 30.0)), Organ.MUSCLE)
    return depth - fat - muscle


def _lumen(
    labels: np.ndarray,
    grid: Grid,
    organ: Organ,
    wall_mm: float,
    air_fraction: float,
    rng: np.random.Generator,
) -> None:
    """Carve a hollow organ into wall, fluid and gas (gas rises: anterior in a supine patient)."""
    mask = labels == organ
    if not mask.any():
        return
    sl = ndi.find_objects(mask.astype(np.uint8))[0]
    sub = mask[sl]
    dist = ndi.distance_transform_edt(sub, sampling=grid.spacing[::-1])
    lumen = dist > wall_mm
    if not lumen.any():
        return
    y = grid.axes()[1][sl[1]][None, :, None]
    ys = np.broadcast_to(y, sub.shape)[lumen]
    up = (ys.max() - ys) / max(float(ys.max() - ys.min()), 1.0)  # 1 most anterior
    sub_grid = Grid(
        tuple(np.asarray(grid.origin) + np.array([s.start for s in sl[::-1]]) * grid.spacing),
        grid.spacing,
        sub.shape,
    )
    score = 0.7 * up + 0.3 * (smooth_noise(rng, sub_grid, 8.0)[lumen] * 0.3)
    air = score > np.quantile(score, 1 - air_fraction) if air_fraction > 0 else np.zeros_like(score)
    region = labels[sl]
    vals = np.where(air, Organ.LUMEN_AIR, Organ.LUMEN_FLUID).astype(np.uint8)
    region[lumen] = vals


def _kidney_medulla(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    for organ in (Organ.KIDNEY_L, Organ.KIDNEY_R):
        mask = labels == organ
        if not mask.any():
            continue
        sl = ndi.find_objects(mask.astype(np.uint8))[0]
        dist = ndi.distance_transform_edt(mask[sl], sampling=grid.spacing[::-1])
        region = labels[sl]
        region[dist > rng.uniform(5.0, 7.0)] = Organ.KIDNEY_MEDULLA


def render_body(labels: np.ndarray, grid: Grid, plan: BodyPlan, rng: np.random.Generator) -> np.ndarray:
    """Paint the plan and the hollow-organ contents into `labels` (in place); returns it."""
    x, y, z = grid.axes()
    X, Y = x[None, :], y[:, None]
    inner = np.zeros(labels.shape, dtype=bool)
    for k in range(len(z)):
        inner[k] = _render_slice(labels[k], plan, float(z[k]), X, Y) >= 0
    inner &= labels == BG
    _lungs(labels, grid, plan, inner)
    _lumen(labels, grid, Organ.STOMACH, 3.0, rng.uniform(0.05, 0.35), rng)
    _lumen(labels, grid, Organ.DUODENUM, 2.0, rng.uniform(0.0, 0.3), rng)
    _kidney_medulla(labels, grid, rng)
    _liver_vessels(labels, grid, rng)
    _bowel(labels, grid, plan, inner, rng)
    labels[labels == BG] = Organ.FAT
    return labels


def _lungs(labels: np.ndarray, grid: Grid, plan: BodyPlan, inner: np.ndarray) -> None:
    """Lung bases above a diaphragm draped over liver, spleen, stomach and kidneys; heart in front."""
    nz = labels.shape[0]
    lut = np.zeros(256, dtype=bool)
    lut[list(DIAPHRAGM_ORGANS)] = True
    under = lut[labels]
    top = np.where(under.any(axis=0), nz - 1 - np.argmax(under[::-1], axis=0), -1).astype(np.float64)
    if (top < 0).all():
        return
    z0, sz = grid.origin[2], grid.spacing[2]
    floor_k = (plan.kidney_top_z - z0) / sz
    r = max(1, round(30.0 / grid.spacing[0]))
    top = ndi.grey_dilation(top, size=(2 * r + 1, 2 * r + 1))
    top = np.maximum(ndi.gaussian_filter(np.maximum(top, floor_k), 10.0 / grid.spacing[0]), floor_k)
    k = np.arange(nz, dtype=np.float64)[:, None, None]
    above = k > top[None] + 5.0 / sz
    diaphragm = (k > top[None]) & ~above
    x, y, zz = grid.axes()
    spine = np.array([plan.at(float(v))[2] for v in zz])
    near_mid = (np.abs(x[None, None, :] - spine[:, 0, None, None]) < 30.0) & (
        y[None, :, None] < spine[:, 1, None, None]
    )
    heart = ((x[None, None, :] - spine[:, 0, None, None] - 15.0) / 75.0) ** 2 + (
        (y[None, :, None] - spine[:, 1, None, None] + 125.0) / 55.0
    ) ** 2 < 1.0
    labels[inner & diaphragm & (labels == BG)] = Organ.MUSCLE
    labels[inner & above & heart & (labels == BG)] = Organ.HEART
    labels[inner & above & near_mid & (labels == BG)] = Organ.FAT
    labels[inner & above & (labels == BG)] = Organ.LUNG


def _bowel(
    labels: np.ndarray, grid: Grid, plan: BodyPlan, inner: np.ndarray, rng: np.random.Generator
) -> None:
    """Bowel loops (wall, fluid, gas) in the peritoneal space, with fat planes around organs."""
    free = inner & (labels == BG)
    if not free.any():
        return
    keep_off = np.isin(
        labels,
        (
            Organ.PANCREAS,
            *VESSELS,
            Organ.KIDNEY_L,
            Organ.KIDNEY_R,
            Organ.KIDNEY_MEDULLA,
            Organ.ADRENAL_L,
            Organ.ADRENAL_R,
            Organ.DUODENUM,
            Organ.LUMEN_FLUID,
        ),
    )
    st = ndi.generate_binary_structure(3, 1)
    st[0] = st[2] = False  # in-plane cross: the fat plane is thickest where slices are thin
    keep_off = ndi.binary_dilation(keep_off, structure=st, iterations=max(1, round(5.0 / grid.spacing[0])))
    _, y, z = grid.axes()
    spine_y = np.array([plan.at(float(v))[2][1] for v in z])
    anterior = y[None, :, None] < (spine_y - plan.vertebra_mm[1] - 12.0)[:, None, None]
    cand = free & ~keep_off & anterior
    if not cand.any():
        return
    field = smooth_noise(rng, grid, 7.0)
    thr = np.quantile(field[cand], 1 - plan.bowel_fraction)
    bowel = cand & (field > thr)
    lumen = ndi.binary_erosion(bowel, structure=st, iterations=max(1, round(2.5 / grid.spacing[0])))
    labels[bowel] = Organ.BOWEL
    gas = smooth_noise(rng, grid, 6.0) - 0.015 * (y[None, :, None] - y.mean())
    gthr = np.quantile(gas[lumen], 1 - plan.bowel_air_fraction) if lumen.any() else np.inf
    labels[lumen] = np.where(gas[lumen] > gthr, Organ.LUMEN_AIR, Organ.LUMEN_FLUID)
    vessels = free & ~bowel & (smooth_noise(rng, grid, 1.6) > 2.3)
    labels[vessels] = Organ.SMALL_VESSEL


def _liver_vessels(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    """Portal branches and hepatic veins: where two smooth random fields both cross zero (curves)."""
    mask = labels == Organ.LIVER
    if not mask.any():
        return
    sl = ndi.find_objects(mask.astype(np.uint8))[0]
    sub_grid = Grid(
        tuple(np.asarray(grid.origin) + np.array([s.start for s in sl[::-1]]) * grid.spacing),
        grid.spacing,
        mask[sl].shape,
    )
    a = smooth_noise(rng, sub_grid, 9.0)
    b = smooth_noise(rng, sub_grid, 9.0)
    depth = ndi.distance_transform_edt(mask[sl], sampling=grid.spacing[::-1])
    width = 0.18 + 0.12 * np.clip(depth / 35.0, 0, 1)  # calibre grows towards the hilum
    vessel = mask[sl] & (np.abs(a) < width) & (np.abs(b) < width) & (depth > 4.0)
    region = labels[sl]
    region[vessel] = Organ.HEPATIC_VESSEL
