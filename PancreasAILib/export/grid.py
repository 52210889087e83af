"""Grid facts shared by every exporter: voxel-to-LPS matrices, grid equality and exact index mapping.

All exporters promise that outputs overlay the inputs in physical space, whatever the direction
matrix (LPS, RAS-flipped, permuted, oblique). These helpers express that promise once: a grid is its
4x4 voxel (i, j, k) to LPS millimetre matrix, and moving voxels between two grids is exact only when
every voxel centre of one lands on a voxel centre of the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

GRID_TOLERANCE = 1e-4  # spacing/direction tolerance; origins compare within this many mm as well
INDEX_TOLERANCE = 1e-3  # how far (in voxels) a mapped centre may sit from an integer index


class GeometryMismatchError(ValueError):
    """Two images that must share one grid (size, spacing, origin, direction) do not."""


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """The 4x4 matrix taking a voxel index (i, j, k, 1) to its LPS position in millimetres."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def image_from_ijk_to_lps(array_kji: np.ndarray, matrix: np.ndarray) -> sitk.Image:
    """A SimpleITK image from a (k, j, i) array and a voxel-to-LPS matrix (the inverse of `ijk_to_lps`)."""
    matrix = np.asarray(matrix, dtype=float)
    columns = matrix[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("The voxel-to-LPS matrix has a zero-length axis.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (columns / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in matrix[:3, 3]))
    return image


def grid_differences(a: sitk.Image, b: sitk.Image, tolerance: float = GRID_TOLERANCE) -> list[str]:
    """Human-readable differences between two grids; empty when they are the same grid."""
    problems = []
    if a.GetDimension() != b.GetDimension():
        problems.append(f"dimension {a.GetDimension()} vs {b.GetDimension()}")
        return problems
    if a.GetSize() != b.GetSize():
        problems.append(f"size {a.GetSize()} vs {b.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance, rtol=0):
        problems.append(f"spacing {_fmt(a.GetSpacing())} vs {_fmt(b.GetSpacing())}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance, rtol=0):
        problems.append(f"origin {_fmt(a.GetOrigin())} vs {_fmt(b.GetOrigin())}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance, rtol=0):
        problems.append(f"direction {_fmt(a.GetDirection())} vs {_fmt(b.GetDirection())}")
    return problems


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = GRID_TOLERANCE) -> bool:
    return not grid_differences(a, b, tolerance)


def require_same_grid(image: sitk.Image, reference: sitk.Image, what: str) -> None:
    """Raise a `GeometryMismatchError` naming `what` and each difference from the reference grid."""
    problems = grid_differences(image, reference)
    if problems:
        raise GeometryMismatchError(
            f"The {what} is not on the reference grid ({'; '.join(problems)}). "
            "Resample it onto the reference image (geometry.resample_to_reference) before export."
        )


@dataclass(frozen=True)
class PlaneMapping:
    """Where a DICOM plane's pixels fall in a grid: pixel (r, c) is voxel start + c * col_step + r * row_step."""

    start: np.ndarray  # (i, j, k) of pixel (0, 0)
    col_step: np.ndarray  # index change per column
    row_step: np.ndarray  # index change per row
    rows: int
    columns: int

    def inside(self, size_ijk: Sequence[int]) -> bool:
        """True when every pixel lands inside the grid (the mapping is affine: the corners suffice)."""
        corners = [
            self.start + c * self.col_step + r * self.row_step
            for r in (0, self.rows - 1)
            for c in (0, self.columns - 1)
        ]
        size = np.asarray(size_ijk)
        return all(bool(np.all(p >= 0) and np.all(p < size)) for p in corners)

    def indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, j, i) index arrays of shape (rows, columns), ready to index a (k, j, i) numpy array."""
        r = np.arange(self.rows)[:, None]
        c = np.arange(self.columns)[None, :]
        i, j, k = (self.start[a] + c * self.col_step[a] + r * self.row_step[a] for a in range(3))
        shape = (self.rows, self.columns)
        return np.broadcast_to(k, shape), np.broadcast_to(j, shape), np.broadcast_to(i, shape)


def plane_mapping(
    target: np.ndarray,
    position: Sequence[float],
    row_direction: Sequence[float],
    column_direction: Sequence[float],
    pixel_spacing: Sequence[float],
    rows: int,
    columns: int,
) -> PlaneMapping | None:
    """Map a DICOM plane's pixels onto a grid exactly, or None when they do not sit on voxel centres.

    `target` is the grid's voxel-to-LPS matrix; the plane follows DICOM conventions (row direction =
    ImageOrientationPatient[:3], along which the column index grows; pixel_spacing = (between rows,
    between columns)).
    """
    inverse = np.linalg.inv(np.asarray(target, float))
    start = inverse[:3, :3] @ np.asarray(position, float) + inverse[:3, 3]
    col_step = inverse[:3, :3] @ (float(pixel_spacing[1]) * np.asarray(row_direction, float))
    row_step = inverse[:3, :3] @ (float(pixel_spacing[0]) * np.asarray(column_direction, float))
    step_tolerance = INDEX_TOLERANCE / max(rows, columns, 1)  # errors accumulate across the plane
    for vector, tolerance in (
        (start, INDEX_TOLERANCE),
        (col_step, step_tolerance),
        (row_step, step_tolerance),
    ):
        if np.abs(vector - np.rint(vector)).max() > tolerance:
            return None
    return PlaneMapping(
        np.rint(start).astype(np.int64),
        np.rint(col_step).astype(np.int64),
        np.rint(row_step).astype(np.int64),
        int(rows),
        int(columns),
    )


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


@dataclass(frozen=True)
class GeometryInfo:
    """A grid as plain numbers, for the report and for comparisons in tests."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> GeometryInfo:
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def matches(self, image: sitk.Image, tolerance: float = GRID_TOLERANCE) -> bool:
        other = GeometryInfo.from_image(image)
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tolerance, rtol=0)
            and np.allclose(self.origin, other.origin, atol=tolerance, rtol=0)
            and np.allclose(self.direction, other.direction, atol=tolerance, rtol=0)
        )
