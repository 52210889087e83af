"""Diffusion anomaly heatmap of the pancreas (issue 5): DDIM encode to noise level L, decode with
classifier guidance of scale S towards "healthy", |input - reconstruction| inside the dilated pancreas.

`AnomalyModel.load()` once, then `model.heatmap(roi_hu, phase_mask, pancreas_mask, spacing_zyx)` per
case. Research use only, not for clinical use.
"""

from PancreasAILib.anomaly.heatmap import AnomalyModel, HeatmapResult

__all__ = ["AnomalyModel", "HeatmapResult"]
