"""Painting primitives for label maps: smooth paths, tubes of varying radius and ellipsoids.

Each primitive is evaluated only inside its own bounding box, so painting a vessel or an organ
costs in proportion to its size, not to the volume's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial.transform import Rotation

from PancreasAILib.synthesis.grid import Grid


def rotation(angles_deg: Iterable[float]) -> np.ndarray:
    """3x3 rotation matrix from extrinsic x, y, z angles in degrees."""
    return Rotation.from_euler("xyz", list(angles_deg), degrees=True).as_matrix()


def smooth_path(control: np.ndarray, samples_per_segment: int = 8) -> np.ndarray:
    """A Catmull-Rom spline through control points (N, 3) mm, densely sampled."""
    control = np.asarray(control, dtype=np.float64)
    if len(control) < 3:
        t = np.linspace(0, 1, samples_per_segment + 1)[:, None]
        return control[0] + t * (control[-1] - control[0])
    padded = np.vstack([2 * control[0] - control[1], control, 2 * control[-1] - control[-2]])
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(control[-1:])
    return np.vstack(out)


def interpolate_radii(control_radii: np.ndarray, n_out: int) -> np.ndarray:
    control_radii = np.asarray(control_radii, dtype=np.float64)
    return np.interp(np.linspace(0, 1, n_out), np.linspace(0, 1, len(control_radii)), control_radii)


def arclength(path: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])


def _capsule_value(grid: Grid, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """distance - radius of every voxel of `grid` to the segment a-b (radius linear from ra to rb)."""
    X, Y, Z = grid.mesh()
    ab = b - a
    length2 = float(ab @ ab) or 1e-9
    t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / length2
    np.clip(t, 0.0, 1.0, out=t)
    dx = X - (a[0] + t * ab[0])
    dy = Y - (a[1] + t * ab[1])
    dz = Z - (a[2] + t * ab[2])
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + t * (rb - ra))


def paint_tube(
    labels: np.ndarray,
    grid: Grid,
    path: np.ndarray,
    radii: np.ndarray | float,
    value: int,
    into: Iterable[int] = (0,),
) -> int:
    """Set voxels within the tube to `value` where the current label is in `into`; returns voxels set."""
    path = np.asarray(path, dtype=np.float64)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(path),))
    into_lut = np.zeros(256, dtype=bool)
    into_lut[list(into)] = True
    painted = 0
    for i in range(len(path) - 1):
        a, b, ra, rb = path[i], path[i + 1], radii[i], radii[i + 1]
        r = max(ra, rb) + max(grid.spacing)
        sub, sl = grid.sub(grid.index_of(np.minimum(a, b) - r), grid.index_of(np.maximum(a, b) + r) + 1)
        if min(sub.shape) == 0:
            continue
        region = labels[sl]
        sel = (_capsule_value(sub, a, b, ra, rb) <= 0) & into_lut[region]
        region[sel] = value
        painted += int(sel.sum())
    return painted


def ellipsoid_value(grid: Grid, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Normalised radius q (q <= 1 inside) of an ellipsoid with axes rot[:, k] and radii[k]."""
    X, Y, Z = grid.mesh()
    q = np.zeros(grid.shape, dtype=np.float32)
    for k in range(3):
        u = ((X - centre[0]) * rot[0, k] + (Y - centre[1]) * rot[1, k] + (Z - centre[2]) * rot[2, k]) / radii[
            k
        ]
        q += u * u
    return np.sqrt(q)


def paint_ellipsoid(
    labels: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radii: np.ndarray,
    value: int,
    rot: np.ndarray | None = None,
    into: Iterable[int] = (0,),
) -> int:
    centre = np.asarray(centre, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    rot = np.eye(3) if rot is None else rot
    r = float(radii.max()) + max(grid.spacing)
    sub, sl = grid.box_around(centre, r)
    if min(sub.shape) == 0:
        return 0
    into_lut = np.zeros(256, dtype=bool)
    into_lut[list(into)] = True
    region = labels[sl]
    sel = (ellipsoid_value(sub, centre, radii, rot) <= 1.0) & into_lut[region]
    region[sel] = value
    return int(sel.sum())
