"""From a stage-2 ROI to the batch of 2D slices the anomaly networks see, and back.

Training and inference share this code, so a model always sees slices made the same way:
- only slices that touch the dilated pancreas are processed (the heatmap is zero elsewhere);
- each phase is centred on its median HU inside the dilated pancreas and scaled by a fixed
  100 HU, which makes the input independent of the contrast timing and of the scanner's intensity
  model (domain-randomised training cases differ by hundreds of HU) while keeping contrasts;
- slices are resampled in-plane to a fixed model spacing, so any ROI size or spacing works;
- one crop, the dilated pancreas's bounding box plus context, is cut from every slice and padded
  to a multiple of the networks' stride, so all slices go through the networks in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi


@dataclass
class PreprocessSpec:
    """How ROI slices become network input. Stored with the weights (`input_spec`)."""

    model_spacing_mm: float = 2.0  # in-plane spacing the networks run at
    hu_scale: float = 100.0  # HU per unit after centring
    clip: float = 2.5  # |normalised value| limit (air, bone and contrast-filled vessels saturate)
    dilation_mm: float = 6.0  # the pancreas mask is dilated by this (predicted masks miss edges)
    context_px: int = 8  # model pixels of context around the dilated pancreas's box
    multiple: int = 16  # crop sides are a multiple of this (total stride of the networks)
    min_side: int = 32
    crop_px: int = 64  # training crop side
    min_tumour_px: int = 4  # a training crop is "tumour" with at least this many tumour pixels

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class SliceBatch:
    """Network-ready slices plus what is needed to put per-pixel results back on the ROI grid."""

    x: torch.Tensor  # (N, 3, H, W) normalised phases; missing phases are zero
    region: torch.Tensor  # (N, 1, H, W) dilated pancreas in the crop (0/1)
    phase_mask: torch.Tensor  # (3,) bool
    z: np.ndarray  # ROI slice index of each batch row
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1) of the crop in the resampled plane (may overhang)
    plane_shape: tuple[int, int]  # resampled plane (H, W)
    dilated: np.ndarray  # (Z, Y, X) bool dilated pancreas on the ROI grid
    extra: torch.Tensor | None = None  # an optional map carried through the same resampling (training)

    @property
    def empty(self) -> bool:
        return self.x.shape[0] == 0


def dilate_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float], mm: float) -> np.ndarray:
    """Dilate a boolean volume by `mm` physical millimetres (Euclidean, anisotropic spacing)."""
    if mm <= 0 or not mask.any():
        return mask.copy()
    idx = np.argwhere(mask)
    pad = np.ceil(mm / np.asarray(spacing_zyx)).astype(int) + 1
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + pad, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    dist = ndi.distance_transform_edt(~mask[box], sampling=spacing_zyx)
    out = np.zeros_like(mask)
    out[box] = dist <= mm
    return out


def normalise_phases(
    roi_hu: np.ndarray, phase_mask: np.ndarray, region: np.ndarray, spec: PreprocessSpec
) -> np.ndarray:
    """(3, Z, Y, X) HU -> centred and scaled float32; missing phases become zero."""
    out = np.zeros(roi_hu.shape, dtype=np.float32)
    for c in range(roi_hu.shape[0]):
        if not phase_mask[c]:
            continue
        centre = float(np.median(roi_hu[c][region])) if region.any() else float(np.median(roi_hu[c]))
        np.clip((roi_hu[c] - centre) / spec.hu_scale, -spec.clip, spec.clip, out=out[c])
    return out


def _fit_box(lo: int, hi: int, spec: PreprocessSpec) -> tuple[int, int]:
    """Grow [lo, hi) by the context and to a multiple of the stride, about its centre."""
    lo, hi = lo - spec.context_px, hi + spec.context_px
    side = max(spec.min_side, int(np.ceil((hi - lo) / spec.multiple)) * spec.multiple)
    start = (lo + hi) // 2 - side // 2
    return start, start + side


def _crop_padded(t: torch.Tensor, box: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """t[..., y0:y1, x0:x1] where the box may overhang: replicate (images) or zero (masks) padding."""
    y0, y1, x0, x1 = box
    h, w = t.shape[-2:]
    pads = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
    if any(pads):
        t = F.pad(t, pads, mode=mode) if mode == "replicate" else F.pad(t, pads)
        y0, y1, x0, x1 = y0 + pads[2], y1 + pads[2], x0 + pads[0], x1 + pads[0]
    return t[..., y0:y1, x0:x1]


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    down = size[0] < t.shape[-2] or size[1] < t.shape[-1]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=down)


def prepare_slices(
    roi_hu: np.ndarray,
    phase_mask: np.ndarray,
    pancreas_mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    spec: PreprocessSpec,
    extra: np.ndarray | None = None,
) -> SliceBatch:
    """The batch of model-space slices for one ROI (see the module docstring)."""
    phase_mask = np.asarray(phase_mask, dtype=bool)
    if roi_hu.ndim != 4 or roi_hu.shape[0] != 3:
        raise ValueError(f"roi_hu must be (3, Z, Y, X); got {roi_hu.shape}.")
    if pancreas_mask.shape != roi_hu.shape[1:]:
        raise ValueError(f"pancreas_mask {pancreas_mask.shape} does not match roi_hu {roi_hu.shape[1:]}.")
    if not phase_mask.any():
        raise ValueError("At least one phase must be present.")
    dilated = dilate_mm(np.asarray(pancreas_mask, dtype=bool), spacing_zyx, spec.dilation_mm)
    z = np.nonzero(dilated.any(axis=(1, 2)))[0]
    _, sy, sx = spacing_zyx
    plane = (
        max(1, round(roi_hu.shape[2] * sy / spec.model_spacing_mm)),
        max(1, round(roi_hu.shape[3] * sx / spec.model_spacing_mm)),
    )
    pm = torch.from_numpy(phase_mask.copy())
    if len(z) == 0:
        empty = torch.zeros((0, 3, spec.min_side, spec.min_side))
        return SliceBatch(empty, empty[:, :1], pm, z, (0, 0, 0, 0), plane, dilated)
    norm = normalise_phases(roi_hu[:, z], phase_mask, dilated[z], spec)
    x = _resize(torch.from_numpy(norm).permute(1, 0, 2, 3).contiguous(), plane)
    region = _resize(torch.from_numpy(dilated[z, None].astype(np.float32)), plane)
    rows = torch.nonzero(region.amax(dim=(0, 1, 3)) > 0.5).flatten()
    cols = torch.nonzero(region.amax(dim=(0, 1, 2)) > 0.5).flatten()
    if len(rows) == 0:  # a sliver thinner than a model pixel: use the raw support
        rows = torch.nonzero(region.amax(dim=(0, 1, 3)) > 0).flatten()
        cols = torch.nonzero(region.amax(dim=(0, 1, 2)) > 0).flatten()
    box = (*_fit_box(int(rows[0]), int(rows[-1]) + 1, spec), *_fit_box(int(cols[0]), int(cols[-1]) + 1, spec))
    x = _crop_padded(x, box, "replicate") * pm.view(1, 3, 1, 1)
    region = (_crop_padded(region, box, "constant") > 0.5).float()
    extra_t = None
    if extra is not None:
        extra_t = _crop_padded(
            _resize(torch.from_numpy(extra[z, None].astype(np.float32)), plane), box, "constant"
        )
    return SliceBatch(x.contiguous(), region, pm, z, box, plane, dilated, extra_t)


def restore(values: torch.Tensor, batch: SliceBatch, roi_shape: tuple[int, int, int]) -> np.ndarray:
    """(N, H, W) per-pixel values of the crop -> (Z, Y, X) float32 on the ROI grid, zero outside."""
    out = np.zeros(roi_shape, dtype=np.float32)
    if batch.empty:
        return out
    y0, y1, x0, x1 = batch.box
    h, w = batch.plane_shape
    canvas = torch.zeros((values.shape[0], 1, h, w), dtype=torch.float32)
    sy0, sx0 = max(0, -y0), max(0, -x0)
    ty0, ty1, tx0, tx1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    canvas[:, 0, ty0:ty1, tx0:tx1] = values[:, sy0 : sy0 + ty1 - ty0, sx0 : sx0 + tx1 - tx0].float()
    back = F.interpolate(canvas, size=roi_shape[1:], mode="bilinear", align_corners=False)
    out[batch.z] = back[:, 0].numpy()
    out *= batch.dilated
    return out
