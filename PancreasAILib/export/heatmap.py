"""The anomaly heatmap output: a float32 volume on the reference grid, and its report summary.

When the heatmap was not computed, heatmap.nii.gz still exists (all zeros) so the output folder
always has the same files; `HeatmapInfo.computed` in the report says whether the values are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.export.grid import require_same_grid
from PancreasAILib.export.report import HeatmapInfo


def heatmap_on_reference(heatmap: sitk.Image | None, reference: sitk.Image) -> sitk.Image:
    """The heatmap as float32 on the reference grid (zeros when None); raises on another grid or NaN."""
    if heatmap is None:
        out = sitk.Image(reference.GetSize(), sitk.sitkFloat32)
        out.CopyInformation(reference)
        return out
    if heatmap.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("The heatmap must be a scalar image.")
    require_same_grid(heatmap, reference, "heatmap")
    out = sitk.Cast(heatmap, sitk.sitkFloat32)
    if not np.all(np.isfinite(sitk.GetArrayViewFromImage(out))):
        raise ValueError("The heatmap holds NaN or infinite values.")
    out.CopyInformation(reference)
    return out


def write_heatmap(path: Path, heatmap: sitk.Image | None, reference: sitk.Image) -> Path:
    """Write the heatmap as compressed float32 NIfTI on the reference grid (zeros = not computed)."""
    path = Path(path)
    sitk.WriteImage(heatmap_on_reference(heatmap, reference), str(path), useCompression=True)
    return path


def summarize_heatmap(heatmap: sitk.Image | None, labels: sitk.Image | None = None) -> HeatmapInfo:
    """The report's heatmap entry: peak value and its LPS position (inside the pancreas when labels exist)."""
    if heatmap is None:
        return HeatmapInfo()
    values = sitk.GetArrayViewFromImage(heatmap)
    region = "volume"
    if labels is not None:
        mask = sitk.GetArrayViewFromImage(labels) > 0
        if mask.any():
            values = np.where(mask, values, -np.inf)
            region = "pancreas"
    flat = int(np.argmax(values))
    k, j, i = np.unravel_index(flat, values.shape)
    peak = float(values[k, j, i])
    peak_mm = tuple(float(v) for v in heatmap.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
    return HeatmapInfo(
        computed=True,
        peak_value=peak,
        peak_mm=peak_mm,
        summary=f"peak {peak:.3g} in the {region} at LPS ({peak_mm[0]:.1f}, {peak_mm[1]:.1f}, {peak_mm[2]:.1f}) mm",
    )
