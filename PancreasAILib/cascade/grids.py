"""The working grids of the cascade and moving images onto them in physical space.

Both stages work on axis-aligned LPS grids at a fixed spacing (stage 1: the whole scan, coarse;
stage 2: a box around the pancreas, fine). Training and inference build them with these same
functions, so a network always sees the spacing and orientation it was trained on, whatever the
input's direction matrix (RAS, flipped, oblique) or slice thickness.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from PancreasAILib.geometry import BoundingBox, crop_to_box

HU_OFFSET, HU_SCALE, HU_LOW, HU_HIGH = 50.0, 150.0, -3.0, 3.0


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """HU -> network input: soft tissue near 0, fat near -1, air clipped at -3 (-400 HU), bone at 3 (500 HU)."""
    return np.clip((np.asarray(hu, np.float32) - HU_OFFSET) / HU_SCALE, HU_LOW, HU_HIGH)


def image_box(image: sitk.Image) -> BoundingBox:
    """The physical box (LPS mm) covered by an image's voxels, whatever its direction."""
    size = np.array(image.GetSize())
    corners = [
        image.TransformContinuousIndexToPhysicalPoint((x, y, z))
        for x in (-0.5, size[0] - 0.5)
        for y in (-0.5, size[1] - 0.5)
        for z in (-0.5, size[2] - 0.5)
    ]
    corners = np.array(corners)
    return BoundingBox(tuple(corners.min(axis=0)), tuple(corners.max(axis=0)))


def grid_for_box(
    box: BoundingBox,
    spacing: Sequence[float],
    divisor: Sequence[int] = (1, 1, 1),
    min_size: Sequence[int] = (1, 1, 1),
) -> sitk.Image:
    """An empty axis-aligned LPS grid covering `box` at `spacing` (x, y, z), its size padded to a multiple
    of `divisor` (x, y, z) and at least `min_size`, centred on the box."""
    spacing = np.asarray(spacing, float)
    extent = np.asarray(box.high) - np.asarray(box.low)
    size = np.maximum(np.ceil(extent / spacing - 1e-6).astype(int), np.asarray(min_size))
    divisor = np.asarray(divisor)
    size = ((size + divisor - 1) // divisor) * divisor
    centre = (np.asarray(box.low) + np.asarray(box.high)) / 2
    origin = centre - (size - 1) / 2 * spacing
    grid = sitk.Image([int(v) for v in size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(v) for v in spacing))
    grid.SetOrigin(tuple(float(v) for v in origin))
    return grid


def resample_onto(
    image: sitk.Image,
    grid: sitk.Image,
    *,
    linear: bool = True,
    default: float = 0.0,
    pixel: int = sitk.sitkFloat32,
    smooth: bool = True,
) -> np.ndarray:
    """`image` resampled onto `grid` as a (Z, Y, X) array. Downsampling is smoothed first (anti-aliasing).

    Only the part of `image` around `grid` is smoothed: the tumour network's box is a few percent of
    a 512 x 512 x 120 scan, and smoothing the whole scan for it cost about a second per phase."""
    source = image
    if linear and smooth:
        old = np.array(image.GetSpacing())
        new = np.array(grid.GetSpacing())
        sigma = [0.4 * n if n > 1.5 * o else 0.0 for n, o in zip(new, old, strict=True)]
        if any(sigma):
            # 5 sigma beyond the grid (plus one voxel for interpolation): the Gaussian's tail there is < 1e-5
            margin = 5.0 * max(sigma) + float(old.max())
            try:
                source = crop_to_box(image, image_box(grid).expanded([margin] * 3))
            except ValueError:  # the grid lies outside the image: every voxel takes `default`
                source = image
            source = sitk.SmoothingRecursiveGaussian(
                sitk.Cast(source, sitk.sitkFloat32), [max(s, 1e-3) for s in sigma]
            )
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(source, grid, sitk.Transform(), interp, default, pixel)
    return sitk.GetArrayFromImage(out)


def array_to_grid(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """A (Z, Y, X) array as an image with `grid`'s geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def voxel_centres_mm(grid: sitk.Image, index_zyx: np.ndarray) -> np.ndarray:
    """Physical (LPS mm, x y z) centres of (N, 3) z-y-x indices on an axis-aligned grid."""
    index_xyz = np.asarray(index_zyx, float)[:, ::-1]
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    return np.asarray(grid.GetOrigin()) + (index_xyz * np.asarray(grid.GetSpacing())) @ direction.T
