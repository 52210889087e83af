"""Geometry in physical (LPS, mm) space: reorient, resample, crop with margins and paste back.

Everything here keeps an image's physical placement exact: a crop keeps the origin of its first
voxel, a paste-back lands each voxel where it came from, and a reorientation only permutes and
flips axes, so results overlay the inputs whatever their direction matrices (LPS, RAS, flipped, oblique).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class BoundingBox:
    """An axis-aligned box in LPS millimetres: `low` and `high` corners (x, y, z)."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def expanded(self, margin_mm: Sequence[float]) -> BoundingBox:
        margin = np.asarray(margin_mm, float)
        return BoundingBox(tuple(np.asarray(self.low) - margin), tuple(np.asarray(self.high) + margin))

    @property
    def size_mm(self) -> tuple[float, float, float]:
        return tuple(float(h - lo) for lo, h in zip(self.low, self.high, strict=True))


def to_lps_axial(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes so that index axes run along +L, +P, +S (no interpolation).

    Oblique directions are permuted to their closest axes; the physical geometry is unchanged.
    """
    return sitk.DICOMOrient(image, "LPS")


def resample_to_spacing(
    image: sitk.Image,
    spacing: Sequence[float],
    *,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample onto a grid with `spacing` covering the same physical extent and direction.

    For downsampling with linear interpolation the image is first smoothed (Gaussian with sigma of
    half the new spacing where it grows), so thin bright structures are averaged, not aliased.
    """
    spacing = tuple(float(s) for s in spacing)
    old_spacing = np.array(image.GetSpacing())
    old_size = np.array(image.GetSize())
    new_size = [max(1, round(n * o / s)) for n, o, s in zip(old_size, old_spacing, spacing, strict=True)]
    source = image
    if interpolator != sitk.sitkNearestNeighbor:
        sigma = [0.5 * s if s > 1.5 * o else 0.0 for s, o in zip(spacing, old_spacing, strict=True)]
        if any(sigma):  # recursive (IIR) Gaussian: its cost does not grow with sigma, unlike a kernel
            source = sitk.SmoothingRecursiveGaussian(
                sitk.Cast(image, sitk.sitkFloat32),
                [max(v, 0.01 * o) for v, o in zip(sigma, old_spacing, strict=True)],
            )
    # Keep the physical centre of the first voxel's cell aligned: origin moves by half the change.
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((np.array(spacing) - old_spacing) / 2)
    origin = tuple(np.array(image.GetOrigin()) + shift)
    return sitk.Resample(
        source,
        new_size,
        sitk.Transform(),
        interpolator,
        origin,
        spacing,
        image.GetDirection(),
        default_value,
        source.GetPixelID(),
    )


def resample_to_reference(
    image: sitk.Image,
    reference: sitk.Image,
    *,
    transform: sitk.Transform | None = None,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
    pixel_type: int | None = None,
) -> sitk.Image:
    """Resample `image` onto `reference`'s grid; `transform` maps reference points to image points."""
    return sitk.Resample(
        image,
        reference,
        transform or sitk.Transform(),
        interpolator,
        default_value,
        pixel_type if pixel_type is not None else image.GetPixelID(),
    )


def mask_bounding_box(mask: sitk.Image) -> BoundingBox | None:
    """The physical box (LPS mm) enclosing all non-zero voxels, including their full voxel extent."""
    array = sitk.GetArrayViewFromImage(mask)
    nonzero = np.nonzero(array)
    if nonzero[0].size == 0:
        return None
    low_index = [int(nonzero[2].min()), int(nonzero[1].min()), int(nonzero[0].min())]
    high_index = [int(nonzero[2].max()), int(nonzero[1].max()), int(nonzero[0].max())]
    corners = []
    for cx in (low_index[0] - 0.5, high_index[0] + 0.5):
        for cy in (low_index[1] - 0.5, high_index[1] + 0.5):
            for cz in (low_index[2] - 0.5, high_index[2] + 0.5):
                corners.append(mask.TransformContinuousIndexToPhysicalPoint((cx, cy, cz)))
    corners = np.array(corners)
    return BoundingBox(tuple(corners.min(axis=0)), tuple(corners.max(axis=0)))


def box_region(image: sitk.Image, box: BoundingBox) -> tuple[list[int], list[int]]:
    """Start index and size of the voxels of `image` whose centres fall in `box` (clipped to the image)."""
    corners = [
        (x, y, z)
        for x in (box.low[0], box.high[0])
        for y in (box.low[1], box.high[1])
        for z in (box.low[2], box.high[2])
    ]
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    size = np.array(image.GetSize())
    low = np.clip(np.ceil(indices.min(axis=0) - 1e-6), 0, size - 1).astype(int)
    high = np.clip(np.floor(indices.max(axis=0) + 1e-6), 0, size - 1).astype(int)
    if np.any(high < low):
        raise ValueError("The crop box does not overlap the image.")
    return [int(v) for v in low], [int(v) for v in high - low + 1]


def crop_to_box(image: sitk.Image, box: BoundingBox) -> sitk.Image:
    """Crop to the voxels whose centres fall in `box` (clipped to the image); geometry stays exact."""
    start, size = box_region(image, box)
    return sitk.RegionOfInterest(image, size, start)


def crop_with_margin(image: sitk.Image, mask: sitk.Image, margin_mm: Sequence[float]) -> sitk.Image:
    """Crop `image` to the box of `mask` (same physical space, any grid) plus margins in mm (x, y, z)."""
    box = mask_bounding_box(mask)
    if box is None:
        raise ValueError("The mask is empty: there is nothing to crop around.")
    return crop_to_box(image, box.expanded(margin_mm))


def paste_into(
    reference: sitk.Image,
    crop: sitk.Image,
    *,
    interpolator: int = sitk.sitkNearestNeighbor,
    background: float = 0.0,
) -> sitk.Image:
    """Put `crop` back on `reference`'s grid: exact index paste when the grids align, else resampling."""
    if np.allclose(crop.GetSpacing(), reference.GetSpacing(), atol=1e-5) and np.allclose(
        crop.GetDirection(), reference.GetDirection(), atol=1e-5
    ):
        start = np.array(reference.TransformPhysicalPointToContinuousIndex(crop.GetOrigin()))
        if np.allclose(start, np.round(start), atol=1e-3):
            out = sitk.Image(reference.GetSize(), crop.GetPixelID())
            out.CopyInformation(reference)
            if background:
                out += background
            return sitk.Paste(out, crop, crop.GetSize(), [0, 0, 0], [int(v) for v in np.round(start)])
    return sitk.Resample(crop, reference, sitk.Transform(), interpolator, background, crop.GetPixelID())
