"""The pancreas centreline (head -> tail) and per-slice tracks of tubular organs.

Tumour placement (head, body or tail), tumour orientation along the gland, the upstream
direction of the main duct and the completion of missing vessels all need to know where the
gland runs; a binned principal-axis centreline is robust on real and procedural maps alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from PancreasAILib.synthesis.shapes import arclength

REGIONS: tuple[str, ...] = ("head", "body", "tail")
REGION_BOUNDS: tuple[float, ...] = (0.0, 0.33, 0.66, 1.0)  # arc-length fractions, head first


@dataclass
class Centreline:
    """Points (N, 3) LPS mm from the head to the tail, with the gland's local half-thickness."""

    points: np.ndarray
    half_thickness: np.ndarray

    @property
    def arclength(self) -> np.ndarray:
        return arclength(self.points)

    @property
    def length_mm(self) -> float:
        return float(self.arclength[-1])

    def tangent(self, index: int) -> np.ndarray:
        i0, i1 = max(index - 1, 0), min(index + 1, len(self.points) - 1)
        d = self.points[i1] - self.points[i0]
        return d / (np.linalg.norm(d) + 1e-9)

    def project(self, points_mm: np.ndarray, chunk: int = 20000) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centreline index and arc-length fraction (0 head .. 1 tail) of each point."""
        points_mm = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        nearest = np.empty(len(points_mm), dtype=np.int64)
        for s in range(0, len(points_mm), chunk):
            d = np.linalg.norm(points_mm[s : s + chunk, None, :] - self.points[None], axis=2)
            nearest[s : s + chunk] = np.argmin(d, axis=1)
        fraction = self.arclength[nearest] / max(self.length_mm, 1e-6)
        return nearest, fraction

    def at_fraction(self, fraction: float) -> tuple[np.ndarray, int]:
        s = np.clip(fraction, 0, 1) * self.length_mm
        i = int(np.argmin(np.abs(self.arclength - s)))
        return self.points[i], i


def region_of(fraction: np.ndarray | float) -> np.ndarray:
    """0 head, 1 body, 2 tail for arc-length fractions."""
    return np.clip(np.searchsorted(REGION_BOUNDS[1:-1], np.asarray(fraction), side="right"), 0, 2)


def pancreas_centreline(points_mm: np.ndarray, bin_mm: float = 6.0) -> Centreline:
    """Binned centroids along the gland's principal axis, ordered from the head (patient's right)."""
    points_mm = np.asarray(points_mm, dtype=np.float64)
    if len(points_mm) < 10:
        raise ValueError("Too few pancreas voxels to trace a centreline.")
    mean = points_mm.mean(axis=0)
    centred = points_mm - mean
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    axis = vt[0] if vt[0][0] >= 0 else -vt[0]  # towards the patient's left: head first
    t = centred @ axis
    edges = np.arange(t.min(), t.max() + bin_mm, bin_mm)
    which = np.clip(np.digitize(t, edges) - 1, 0, len(edges) - 1)
    counts = np.bincount(which, minlength=len(edges))
    keep = np.nonzero(counts >= 3)[0]
    centroids = np.stack(
        [
            np.bincount(which, weights=points_mm[:, a], minlength=len(edges))[keep] / counts[keep]
            for a in range(3)
        ],
        axis=1,
    )
    if len(centroids) >= 3:
        smoothed = ndi.uniform_filter1d(centroids, size=3, axis=0, mode="nearest")
        smoothed[0], smoothed[-1] = centroids[0], centroids[-1]
        centroids = smoothed
    # Half-thickness: RMS distance of a bin's points to its centroid, a robust local radius.
    line = Centreline(points=centroids, half_thickness=np.zeros(len(centroids)))
    nearest, _ = line.project(points_mm)
    dist2 = np.sum((points_mm - centroids[nearest]) ** 2, axis=1)
    cnt = np.bincount(nearest, minlength=len(centroids)).astype(np.float64)
    rms = np.sqrt(np.bincount(nearest, weights=dist2, minlength=len(centroids)) / np.maximum(cnt, 1))
    line.half_thickness = np.maximum(rms * 1.2, 3.0)
    return line


@dataclass
class Track:
    """Per-slice centre (x, y) and radius of a roughly vertical tube (aorta, IVC)."""

    z: np.ndarray
    xy: np.ndarray
    radius: np.ndarray

    def at(self, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Centre (…, 2) and radius at heights z, held constant beyond the ends."""
        z = np.asarray(z, dtype=np.float64)
        xy = np.stack([np.interp(z, self.z, self.xy[:, 0]), np.interp(z, self.z, self.xy[:, 1])], axis=-1)
        return xy, np.interp(z, self.z, self.radius)


def vertical_track(points_mm: np.ndarray, slice_mm: float, voxel_area_mm2: float) -> Track | None:
    """Slice-wise centroid and equivalent radius (area = pi r^2) of the voxels of a vertical tube.

    `points_mm` are voxel centres of a map with slices `slice_mm` apart and in-plane voxel area
    `voxel_area_mm2`. Centres are smoothed over z: a slice that also cuts a branch is pulled aside.
    """
    if len(points_mm) < 5:
        return None
    zbin = np.round((points_mm[:, 2] - points_mm[:, 2].min()) / slice_mm).astype(np.int64)
    cnt = np.bincount(zbin).astype(np.float64)
    keep = cnt > 0
    x, y, z = (np.bincount(zbin, weights=points_mm[:, a])[keep] / cnt[keep] for a in range(3))
    xy = np.stack([x, y], axis=1)
    radius = np.sqrt(cnt[keep] * voxel_area_mm2 / np.pi)
    if len(z) >= 5:
        xy = ndi.gaussian_filter1d(xy, 2.0, axis=0, mode="nearest")
        radius = ndi.median_filter(radius, size=5, mode="nearest")
    return Track(z=z, xy=xy, radius=radius)
