"""Axis-aligned LPS voxel grids and the smooth random fields drawn on them.

Every synthesis grid has an identity direction, so array index (k, j, i) is physical
(x, y, z) = origin + (i, j, k) * spacing with +x patient left, +y posterior, +z superior; an axial
slice `array[k]` shown with row 0 at the top is anterior-up, patient's right on the image left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """Origin (x, y, z) mm of voxel 0, spacing (x, y, z) mm, shape (z, y, x)."""

    origin: Vec3
    spacing: Vec3
    shape: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, lo: np.ndarray, hi: np.ndarray, spacing: Vec3) -> Grid:
        """The grid with `spacing` covering the box [lo, hi] (x, y, z mm)."""
        lo = np.asarray(lo, dtype=np.float64)
        size = np.maximum(np.ceil((np.asarray(hi) - lo) / np.asarray(spacing)).astype(int) + 1, 1)
        return cls(
            tuple(float(v) for v in lo),
            tuple(float(s) for s in spacing),
            (int(size[2]), int(size[1]), int(size[0])),
        )

    @classmethod
    def of_image(cls, image: sitk.Image) -> Grid:
        size = image.GetSize()
        return cls(tuple(image.GetOrigin()), tuple(image.GetSpacing()), (size[2], size[1], size[0]))

    @property
    def upper(self) -> np.ndarray:
        """Physical (x, y, z) of the last voxel."""
        return np.asarray(self.origin) + (np.asarray(self.shape[::-1]) - 1) * np.asarray(self.spacing)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1D physical coordinates along x, y and z."""
        return tuple(  # type: ignore[return-value]
            (self.origin[a] + np.arange(n) * self.spacing[a]).astype(np.float32)
            for a, n in enumerate(self.shape[::-1])
        )

    def reference(self, pixel: int = sitk.sitkUInt8) -> sitk.Image:
        image = sitk.Image([int(v) for v in self.shape[::-1]], pixel)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        return image

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array as an image on this grid."""
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        return image

    def index_of(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous (z, y, x) indices of (x, y, z) mm points."""
        return ((np.asarray(points_mm) - self.origin) / self.spacing)[..., ::-1]

    def sub(self, lo_zyx: np.ndarray, hi_zyx: np.ndarray) -> tuple[Grid, tuple[slice, ...]]:
        """The sub-grid of index box [lo, hi) clipped to this grid, and the slices that cut it out."""
        lo = np.clip(np.floor(lo_zyx).astype(int), 0, self.shape)
        hi = np.clip(np.ceil(hi_zyx).astype(int), lo, self.shape)
        origin = np.asarray(self.origin) + lo[::-1] * np.asarray(self.spacing)
        sub = Grid(tuple(float(v) for v in origin), self.spacing, tuple(int(v) for v in hi - lo))
        return sub, tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def box_around(
        self, centre_mm: np.ndarray, half_mm: float | np.ndarray
    ) -> tuple[Grid, tuple[slice, ...]]:
        half = np.broadcast_to(np.asarray(half_mm, dtype=np.float64), (3,))
        lo = self.index_of(np.asarray(centre_mm) - half)
        hi = self.index_of(np.asarray(centre_mm) + half) + 1
        return self.sub(lo, hi)

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x)-shaped physical coordinate arrays X, Y, Z."""
        x, y, z = self.axes()
        return x[None, None, :], y[None, :, None], z[:, None, None]


def upsample_linear(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Corner-aligned linear interpolation of `array` onto `shape`, one axis at a time (cheap gathers)."""
    out = array.astype(np.float32, copy=False)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        pos = np.linspace(0.0, n_in - 1.0, n_out) if n_in > 1 else np.zeros(n_out)
        i0 = np.clip(np.floor(pos).astype(np.intp), 0, max(n_in - 2, 0))
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = (pos - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        low = np.take(out, i0, axis=axis)
        out = low + (np.take(out, i1, axis=axis) - low) * w
    return out


def smooth_noise(rng: np.random.Generator, grid: Grid, sigma_mm: float) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with correlation length ~`sigma_mm`.

    Drawn on a grid about sigma/2 coarse and interpolated up, so its cost does not grow with the
    fine grid's size.
    """
    step = np.maximum(np.asarray(grid.spacing[::-1]), sigma_mm / 2.0)  # z, y, x
    extent = (np.asarray(grid.shape) - 1) * np.asarray(grid.spacing[::-1])
    coarse_shape = tuple(int(v) for v in np.maximum(np.ceil(extent / step).astype(int) + 1, 2))
    white = rng.standard_normal(coarse_shape, dtype=np.float32)
    sig = sigma_mm / np.asarray(
        [extent[a] / (coarse_shape[a] - 1) if extent[a] > 0 else 1.0 for a in range(3)]
    )
    field = ndi.gaussian_filter(white, sig, mode="wrap")
    field -= field.mean()
    field /= field.std() + 1e-6
    return upsample_linear(field, grid.shape)


def binary_fraction_above(values: np.ndarray, fraction: float) -> float:
    """The threshold above which `fraction` of `values` lie."""
    if values.size == 0:
        return float("inf")
    return float(np.quantile(values, 1.0 - min(max(fraction, 0.0), 1.0)))
