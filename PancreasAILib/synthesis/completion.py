"""Complete an anatomy map with the peripancreatic structures its scheme lacks.

A radiologist reads the pancreas against its vessels: the splenic vein along its back, the
portal/SMV confluence behind the neck, the SMA to the left of the SMV, the coeliac trunk and
splenic artery along its upper border, the duodenal C-loop around the head. AMOS has no portal
vein, BTCV no duodenum and neither has the arteries, so they are drawn here from the pancreas
centreline and the aorta track, only into unlabelled voxels (annotated organs always win).
"""

from __future__ import annotations

import numpy as np

from PancreasAILib.synthesis.anatomy import Anatomy, Organ, array_to_image
from PancreasAILib.synthesis.centreline import Centreline, Track, pancreas_centreline, vertical_track
from PancreasAILib.synthesis.grid import Grid
from PancreasAILib.synthesis.shapes import paint_tube, smooth_path

BG = (Organ.BACKGROUND,)


def _points(array: np.ndarray, grid: Grid, organ: Organ) -> np.ndarray:
    idx = np.argwhere(array == organ).astype(np.float64)
    return np.asarray(grid.origin) + idx[:, ::-1] * np.asarray(grid.spacing)


def _tube(
    array: np.ndarray, grid: Grid, control: list | np.ndarray, radius: float | list, organ: Organ, into=BG
) -> None:
    path = smooth_path(np.asarray(control, dtype=np.float64), samples_per_segment=6)
    radii = np.interp(np.linspace(0, 1, len(path)), np.linspace(0, 1, np.size(radius)), np.atleast_1d(radius))
    paint_tube(array, grid, path, radii, organ, into=into)


def confluence_point(line: Centreline) -> np.ndarray:
    """The portal/SMV confluence: behind the pancreatic neck."""
    neck, i = line.at_fraction(0.3)
    return neck + np.array([0.0, line.half_thickness[i] + 5.0, -2.0])


def _offset_along(line: Centreline, f0: float, f1: float, dy: float, dz: float, extra: float) -> np.ndarray:
    """Centreline points between fractions f0..f1, moved dorsally (dy + half-thickness*extra) and up."""
    frac = line.arclength / max(line.length_mm, 1e-6)
    sel = (frac >= f0) & (frac <= f1)
    pts = line.points[sel].copy()
    pts[:, 1] += dy + extra * line.half_thickness[sel]
    pts[:, 2] += dz
    return pts


def add_portal_system(array: np.ndarray, grid: Grid, line: Centreline, spleen: np.ndarray | None) -> None:
    """Splenic vein along the dorsal body/tail, the confluence, and the portal vein to the liver hilum."""
    c = confluence_point(line)
    splenic = _offset_along(line, 0.35, 1.0, dy=4.5, dz=1.0, extra=1.0)
    control = [c, *splenic[:: max(1, len(splenic) // 5)]]
    if spleen is not None:
        tail = line.points[-1]
        control.append(tail + 0.45 * (spleen - tail))
    _tube(array, grid, control, 4.5, Organ.PORTAL_SPLENIC_VEIN)
    portal = [c, c + np.array([-12, -3, 18]), c + np.array([-26, -2, 38]), c + np.array([-38, 2, 52])]
    _tube(array, grid, portal, [7.0, 7.0, 6.0, 4.5], Organ.PORTAL_SPLENIC_VEIN, into=(*BG, Organ.LIVER))


def add_smv(array: np.ndarray, grid: Grid, line: Centreline) -> None:
    c = confluence_point(line)
    _tube(
        array,
        grid,
        [c, c + np.array([-2, -6, -25]), c + np.array([-3, -10, -60]), c + np.array([-4, -12, -100])],
        [5.5, 5.0, 4.5, 4.0],
        Organ.PORTAL_SPLENIC_VEIN,
    )


def add_arteries(array: np.ndarray, grid: Grid, line: Centreline, aorta: Track) -> None:
    """Coeliac trunk with common hepatic and splenic arteries, and the SMA."""
    c = confluence_point(line)
    z_sma = c[2] + 10.0
    (ax, ay), ar = aorta.at(z_sma)
    smv_x = c[0] - 3.0
    sma = [
        [ax, ay - ar + 2, z_sma],
        [ax - 1, ay - ar - 10, z_sma - 8],
        [smv_x + 11, ay - ar - 13, z_sma - 30],
        [smv_x + 12, ay - ar - 16, z_sma - 70],
        [smv_x + 12, ay - ar - 18, z_sma - 110],
    ]
    _tube(array, grid, sma, [4.0, 4.0, 3.5, 3.0, 2.5], Organ.ARTERY)
    z_c = z_sma + 12.0
    (ax, ay), ar = aorta.at(z_c)
    trunk = np.array([ax - 2, ay - ar - 12, z_c + 2])
    _tube(array, grid, [[ax, ay - ar + 2, z_c], trunk], 3.5, Organ.ARTERY)
    _tube(
        array,
        grid,
        [trunk, trunk + np.array([-22, 2, -3]), [c[0] - 32, c[1] - 6, c[2] + 30]],
        2.8,
        Organ.ARTERY,
    )
    splenic = _offset_along(line, 0.4, 1.0, dy=3.0, dz=0.0, extra=0.0)
    if len(splenic):
        frac = line.arclength / max(line.length_mm, 1e-6)
        ht = line.half_thickness[(frac >= 0.4) & (frac <= 1.0)]
        splenic[:, 2] += ht + 3.0
        _tube(array, grid, [trunk, *splenic[:: max(1, len(splenic) // 5)]], 2.6, Organ.ARTERY)


def add_renal_vessels(array: np.ndarray, grid: Grid, aorta: Track, ivc: Track | None) -> None:
    """Renal veins to the IVC (the left one between the aorta and the SMA) and renal arteries."""
    for organ, side in ((Organ.KIDNEY_L, 1.0), (Organ.KIDNEY_R, -1.0)):
        pts = _points(array, grid, organ)
        if len(pts) < 50:
            continue
        centre = pts.mean(axis=0)
        hilum = centre + np.array([-side * 18.0, -8.0, 0.0])
        (ax, ay), ar = aorta.at(centre[2])
        # Renal artery: from the aorta's side, round in front of the psoas, into the hilum.
        artery = [
            [ax + side * (ar - 1), ay, centre[2] + 6],
            [ax + side * (ar + 14), ay + 4, centre[2] + 5],
            hilum + np.array([0, 4, 6]),
        ]
        _tube(array, grid, artery, 3.0, Organ.ARTERY)
        if ivc is None:
            continue
        (ix, iy), _ = ivc.at(centre[2] - 4)
        z = centre[2] - 4
        if side > 0:  # the left renal vein crosses in front of the aorta, behind the SMA
            control = [
                hilum + np.array([0, -2, -4]),
                [ax + ar + 12, ay - ar + 2, z],
                [ax, ay - ar - 4, z],
                [ix, iy, z],
            ]
        else:
            control = [hilum + np.array([0, -2, -4]), [0.5 * (hilum[0] + ix), iy - 2, z], [ix, iy, z]]
        _tube(array, grid, control, 5.0, Organ.RENAL_VEIN)


def _head_profile(array: np.ndarray, grid: Grid, line: Centreline, slab_mm: float = 6.0) -> np.ndarray | None:
    """(K, 4) rows of z, right edge x, median y and left edge x of the head, top slab first (None: no head)."""
    pts = _points(array, grid, Organ.PANCREAS)
    _, fraction = line.project(pts)
    head = pts[fraction < 0.35]
    bottom, top = np.percentile(head[:, 2], [2, 95])
    rows = []
    for z in np.arange(top, bottom - 1e-6, -slab_mm):
        slab = head[np.abs(head[:, 2] - z) <= slab_mm / 2]
        if len(slab) >= 5:
            x_right, x_left = np.percentile(slab[:, 0], [3, 97])
            rows.append([z, x_right, np.median(slab[:, 1]), x_left])
    return np.asarray(rows) if rows else None


def add_duodenum(array: np.ndarray, grid: Grid, line: Centreline, aorta: Track) -> bool:
    """The duodenal C-loop embracing the pancreatic head: D1 to D4.

    Real duodenum hugs the head (on AMOS about 40 % of the gland lies within 15 mm of its wall):
    D2 descends against the head's right border and D3 crosses just under the uncinate process,
    in front of the IVC and aorta. The loop is placed from the head's own voxels, slab by slab, so
    a network learns the head-duodenum interface it will meet in real scans. Returns False (and
    draws nothing) when the map's head is too small to place it against.
    """
    radius = 11.0
    profile = _head_profile(array, grid, line)
    if profile is None:
        return False
    top, bottom = profile[0, 0], profile[-1, 0]
    # D2 centres sit one radius minus 3 mm outside the head's right border: painting only into
    # unlabelled voxels, the wall then lies on the gland without eating into it.
    d2 = [[x_right - radius + 3.0, y + 3.0, z] for z, x_right, y, _ in profile[:: max(1, len(profile) // 4)]]
    z3 = bottom - radius + 4.0
    (ax, ay), ar = aorta.at(z3)
    y3 = min(profile[-1, 2] + 4.0, float(ay - ar - radius + 2.0))  # in front of the aorta and IVC
    first = d2[0]
    control = [
        [first[0] + 14, first[1] - 30, top + 12],  # D1 from the pylorus, anterior
        [first[0] + 2, first[1] - 12, top + 6],
        *d2,
        [profile[-1, 1] - radius + 6.0, y3, z3 + 2.0],  # the inferior flexure
        [0.5 * (profile[-1, 1] + profile[-1, 3]), y3, z3],  # D3 under the uncinate process
        [ax + ar + radius + 2.0, y3 - 2.0, z3 + 2.0],
        [ax + ar + radius + 4.0, ay - ar - 12.0, z3 + 22.0],  # D4 ascends to the flexure
    ]
    _tube(
        array, grid, control, [radius + 1, radius + 1, *[radius] * len(d2), radius, 10, 10, 9], Organ.DUODENUM
    )
    return True


def complete_anatomy(anatomy: Anatomy) -> Anatomy:
    """Add what is missing; returns a new Anatomy whose notes list what was drawn."""
    array = anatomy.array.copy()
    grid = Grid.of_image(anatomy.labels)
    line = pancreas_centreline(_points(array, grid, Organ.PANCREAS))
    sx, sy, sz = grid.spacing
    aorta = vertical_track(_points(array, grid, Organ.AORTA), sz, sx * sy)
    ivc = vertical_track(_points(array, grid, Organ.IVC), sz, sx * sy)
    notes = list(anatomy.notes)
    spleen_pts = _points(array, grid, Organ.SPLEEN)
    spleen = spleen_pts.mean(axis=0) if len(spleen_pts) else None
    pv = _points(array, grid, Organ.PORTAL_SPLENIC_VEIN)
    if len(pv) < 20:
        add_portal_system(array, grid, line, spleen)
        notes.append("drew splenic vein, confluence and portal vein (absent from the map)")
    if len(pv) < 20 or not np.any(pv[:, 2] < confluence_point(line)[2] - 20):
        add_smv(array, grid, line)
        notes.append("drew the superior mesenteric vein")
    if aorta is not None:
        add_arteries(array, grid, line, aorta)
        add_renal_vessels(array, grid, aorta, ivc)
        notes.append(
            "drew coeliac trunk, hepatic, splenic, superior mesenteric and renal arteries, renal veins"
        )
        if not np.any(array == Organ.DUODENUM) and add_duodenum(array, grid, line, aorta):
            notes.append("drew the duodenal C-loop (absent from the map)")
    return Anatomy(
        labels=array_to_image(array, anatomy.labels), name=anatomy.name, source=anatomy.source, notes=notes
    )
