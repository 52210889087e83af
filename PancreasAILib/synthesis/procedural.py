"""A procedural upper-abdomen label map: the fallback when no real anatomy is at hand.

A fresh clone has no ../shared/data, yet the demo and the tests must run; this draws a plausible
abdomen in the `Organ` scheme from tubes and ellipsoids placed like a textbook section at L1-L2
(liver right, spleen left, kidneys dorsal, aorta left-anterior of the spine, IVC right, the
pancreas as a tapering tube from a bulky head beside the duodenum, in front of the SMV, to a tail
at the splenic hilum), randomised per seed in position, size and shape. Coordinates are LPS mm
with the L1 vertebral body centre at (0, 60, 0).
"""

from __future__ import annotations

import numpy as np

from PancreasAILib.synthesis.anatomy import Anatomy, Organ
from PancreasAILib.synthesis.centreline import pancreas_centreline, vertical_track
from PancreasAILib.synthesis.completion import add_arteries, add_renal_vessels
from PancreasAILib.synthesis.grid import Grid
from PancreasAILib.synthesis.shapes import paint_ellipsoid, paint_tube, rotation, smooth_path

SPACING_MM = 2.0
BOUNDS_LO = np.array([-190.0, -150.0, -140.0])
BOUNDS_HI = np.array([190.0, 150.0, 160.0])
BG = (Organ.BACKGROUND,)


class _Painter:
    """Applies one random similarity (scale per axis) and per-point jitter to textbook coordinates."""

    def __init__(self, rng: np.random.Generator, labels: np.ndarray, grid: Grid) -> None:
        self.rng = rng
        self.labels = labels
        self.grid = grid
        self.scale = rng.uniform(0.9, 1.1, size=3)

    def p(self, xyz, jitter: float = 4.0) -> np.ndarray:
        return np.asarray(xyz, dtype=np.float64) * self.scale + self.rng.normal(0.0, jitter, size=3)

    def r(self, radius: float, spread: float = 0.1) -> float:
        return float(radius * self.rng.uniform(1 - spread, 1 + spread) * self.scale.mean())

    def tube(self, control, radii, organ: Organ, into=BG, jitter: float = 4.0) -> None:
        pts = np.array([self.p(c, jitter) for c in control])
        path = smooth_path(pts, samples_per_segment=6)
        rr = np.array([self.r(r, 0.08) for r in np.atleast_1d(radii)])
        radius = np.interp(np.linspace(0, 1, len(path)), np.linspace(0, 1, len(rr)), rr)
        paint_tube(self.labels, self.grid, path, radius, organ, into=into)

    def ellipsoid(self, centre, radii, angles, organ: Organ, into=BG, jitter: float = 5.0) -> None:
        rad = np.array([self.r(r) for r in radii])
        rot = rotation(np.asarray(angles) + self.rng.normal(0, 6.0, size=3))
        paint_ellipsoid(self.labels, self.grid, self.p(centre, jitter), rad, organ, rot=rot, into=into)


def procedural_anatomy(seed: int) -> Anatomy:
    """A randomised abdomen label map (2 mm, LPS, identity direction) named `procedural/<seed>`."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9A4C]))
    grid = Grid.from_bounds(BOUNDS_LO, BOUNDS_HI, (SPACING_MM,) * 3)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    d = _Painter(rng, labels, grid)
    # Great vessels first: everything else is drawn around them.
    d.tube(
        [[18, 30, 170], [15, 30, 60], [14, 30, 0], [10, 32, -80], [6, 33, -140]],
        [11, 11, 10.5, 9.5, 9],
        Organ.AORTA,
        jitter=2.0,
    )
    d.tube(
        [[-24, 26, -140], [-22, 28, -40], [-22, 26, 30], [-30, 18, 90], [-32, 14, 150]],
        [11, 12, 12, 13, 13],
        Organ.IVC,
        jitter=2.0,
    )
    d.tube([[16, 20, 160], [18, 16, 120], [24, 12, 100]], 8.0, Organ.ESOPHAGUS, jitter=2.0)
    # Portal venous system: SMV, confluence behind the neck, splenic vein along the dorsal gland, portal vein.
    d.tube(
        [[-8, -12, -120], [-5, -8, -50], [-3, -2, -10], [-2, 6, 5]],
        [4.5, 5.0, 5.5, 6.0],
        Organ.PORTAL_SPLENIC_VEIN,
        jitter=2.0,
    )
    d.tube(
        [[-2, 6, 5], [22, 14, 12], [48, 24, 20], [74, 32, 30], [92, 40, 38]],
        4.5,
        Organ.PORTAL_SPLENIC_VEIN,
        jitter=3.0,
    )
    d.tube(
        [[-2, 6, 5], [-18, 0, 24], [-38, -2, 44], [-55, 4, 58]],
        [7.0, 7.0, 6.5, 5.0],
        Organ.PORTAL_SPLENIC_VEIN,
        jitter=3.0,
    )
    # Pancreas: uncinate, bulky head, neck in front of the SMV, body over the aorta, tail at the hilum.
    d.tube(
        [
            [-22, 14, -38],
            [-32, 2, -18],
            [-24, -10, -2],
            [-2, -16, 8],
            [24, -8, 14],
            [50, 8, 22],
            [72, 22, 30],
            [84, 30, 34],
        ],
        [9, 15, 14, 9, 11, 10, 9, 7],
        Organ.PANCREAS,
        jitter=4.0,
    )
    # Duodenal C-loop around the head, then the stomach in front of the body and tail.
    d.tube(
        [
            [-14, -44, 8],
            [-38, -28, 6],
            [-54, -4, -2],
            [-56, 4, -30],
            [-46, 14, -56],
            [-14, 16, -64],
            [14, 2, -60],
            [30, -4, -44],
            [36, -10, -24],
        ],
        [12, 12, 12, 12, 11, 10, 10, 10, 10],
        Organ.DUODENUM,
        jitter=3.0,
    )
    d.tube(
        [[24, 12, 100], [52, 8, 88], [60, -20, 60], [42, -50, 34], [12, -60, 16], [-14, -46, 9]],
        [14, 34, 32, 26, 20, 12],
        Organ.STOMACH,
        jitter=5.0,
    )
    d.ellipsoid([-64, 60, -22], [27, 24, 54], [8, -12, 0], Organ.KIDNEY_R)
    d.ellipsoid([64, 60, -6], [27, 24, 54], [8, 12, 0], Organ.KIDNEY_L)
    for side, x in ((Organ.KIDNEY_R, -44.0), (Organ.KIDNEY_L, 44.0)):  # renal sinus fat at the hilum
        d.ellipsoid(
            [x, 52, -14 if x < 0 else 2], [10, 10, 22], [0, 0, 0], Organ.BACKGROUND, into=(side,), jitter=2
        )
    d.ellipsoid([-34, 42, 40], [5, 12, 16], [0, 0, 30], Organ.ADRENAL_R, jitter=3.0)
    d.ellipsoid([34, 40, 32], [5, 12, 16], [0, 0, -30], Organ.ADRENAL_L, jitter=3.0)
    d.ellipsoid([96, 48, 58], [24, 52, 48], [0, 0, -35], Organ.SPLEEN)
    d.ellipsoid([-56, -40, 12], [14, 14, 34], [35, 15, 0], Organ.GALLBLADDER, jitter=4.0)
    d.ellipsoid([-72, 0, 62], [82, 86, 78], [0, 0, 10], Organ.LIVER, jitter=4.0)
    d.ellipsoid([8, -52, 74], [62, 34, 40], [0, 10, -10], Organ.LIVER, jitter=4.0)
    sx, sy, sz = grid.spacing
    line = pancreas_centreline(_points(labels, grid, Organ.PANCREAS))
    aorta = vertical_track(_points(labels, grid, Organ.AORTA), sz, sx * sy)
    ivc = vertical_track(_points(labels, grid, Organ.IVC), sz, sx * sy)
    if aorta is not None:
        add_arteries(labels, grid, line, aorta)
        add_renal_vessels(labels, grid, aorta, ivc)
    return Anatomy(
        labels=grid.image(labels),
        name=f"procedural/{int(seed)}",
        source="procedural",
        notes=["procedural textbook anatomy, randomised per seed"],
    )


def _points(labels: np.ndarray, grid: Grid, organ: Organ) -> np.ndarray:
    idx = np.argwhere(labels == organ).astype(np.float64)
    return np.asarray(grid.origin) + idx[:, ::-1] * np.asarray(grid.spacing)
