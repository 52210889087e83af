"""The anomaly heatmap of one ROI: DDIM encode to L, guided decode towards "healthy", |difference|.

`AnomalyModel.load()` reads both networks from the registry once; `heatmap()` then runs for any
number of cases. Per case: prepare the pancreas slices (see `preprocess`), encode and decode all of
them in one batch on the strided schedule, take |input - reconstruction| averaged over the present
phases, smooth it in-plane (sigma 4 mm: the networks run at 2 mm and single-pixel differences are noise),
put it back on the ROI grid inside the dilated pancreas, smooth it across slices (see
`smooth_across_slices`), and normalise it to [0, 1].

Normalisation: divide by max(peak of the case, floor). The floor is a difference that counts as
"clearly anomalous" (calibrated on validation cases from the training anatomy), so a case with a
lesion gets a map whose peak is 1, while a healthy case keeps low values instead of having its
noise stretched to 1 — a fixed threshold then means the same thing in every case.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from PancreasAILib.anomaly.preprocess import PreprocessSpec, prepare_slices, restore
from PancreasAILib.anomaly.sampler import NoiseSchedule, ddim_decode, ddim_encode, q_sample, strided_timesteps
from PancreasAILib.anomaly.weights import freeze, load_networks, specs_of
from PancreasAILib.models.ddpm import TinyUNet
from PancreasAILib.models.noise_classifier import NoiseClassifier


@dataclass
class HeatmapResult:
    """The heatmap of one ROI and how it was made."""

    heatmap: np.ndarray  # float32 (Z, Y, X) in [0, 1], zero outside the dilated pancreas
    passes_per_slice: int  # network passes per slice (denoiser encode + decode, classifier gradients)
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)  # L, S, steps, seed, model names/versions
    raw_peak: float = 0.0  # largest un-normalised difference (normalised HU / 100) in the region
    slices: int = 0  # ROI slices processed
    region: np.ndarray | None = None  # bool (Z, Y, X): the dilated pancreas the map is defined in


def gaussian_blur2d(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W), zero-padded."""
    if sigma_px <= 0:
        return x
    radius = max(1, int(3 * sigma_px + 0.5))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma_px) ** 2)
    k = (k / k.sum()).to(x)
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(radius, 0))


def smooth_across_slices(
    raw: np.ndarray, region: np.ndarray, sigma_mm: float, spacing_z_mm: float
) -> np.ndarray:
    """Gaussian smoothing of a (Z, Y, X) map along z inside `region`, zero outside.

    Why: both networks see one slice at a time, so their reconstruction errors in healthy gland are
    nearly independent from one slice to the next, while a tumour spans several slices; averaging
    neighbouring slices lowers the first and keeps the second. Normalised convolution (the map and
    the region smoothed alike, then divided) because voxels outside the region are not measurements.
    """
    if sigma_mm <= 0 or raw.shape[0] < 2:
        return raw
    sigma = sigma_mm / spacing_z_mm
    weight = region.astype(np.float32)
    num = ndi.gaussian_filter1d(raw * weight, sigma, axis=0, mode="constant")
    den = ndi.gaussian_filter1d(weight, sigma, axis=0, mode="constant")
    return np.where(region, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


class AnomalyModel:
    """The denoiser and the classifier with their preprocessing; load once, reuse across cases."""

    def __init__(
        self,
        ddpm: TinyUNet,
        classifier: NoiseClassifier,
        spec: PreprocessSpec,
        schedule: NoiseSchedule,
        t_max: int,
        defaults: dict[str, Any],
        info: dict[str, Any],
        device: str = "cpu",
    ) -> None:
        self.ddpm = freeze(ddpm.to(device).eval())
        self.classifier = freeze(classifier.to(device).eval())
        # crops must be a multiple of both networks' total stride, whatever the stored spec says
        stride = int(np.lcm.reduce([spec.multiple, ddpm.config.stride, classifier.config.stride]))
        self.spec = PreprocessSpec.from_dict({**spec.to_dict(), "multiple": stride})
        self.schedule = schedule
        self.alpha_bar = schedule.alpha_bar().to(device)
        self.t_max = t_max
        self.defaults = defaults
        self.info = info
        self.device = device
        self.max_batch = 96  # slices per forward pass; bounds memory on very long ROIs
        self.entries: list = []

    @classmethod
    def load(cls, device: str = "cpu", root: Path | None = None) -> AnomalyModel:
        """Both networks from the weight registry (sha256-checked; a mismatch raises WeightsError)."""
        ddpm, classifier, ddpm_entry, cls_entry = load_networks(device, root)
        spec, schedule, t_max, defaults = specs_of(ddpm_entry)
        info = {
            "ddpm": f"{ddpm_entry.name} {ddpm_entry.version} sha256:{ddpm_entry.sha256[:12]}",
            "classifier": f"{cls_entry.name} {cls_entry.version} sha256:{cls_entry.sha256[:12]}",
        }
        model = cls(ddpm, classifier, spec, schedule, t_max, defaults, info, device)
        model.entries = [ddpm_entry, cls_entry]  # for the report's model list (name, version, sha256)
        return model

    def reconstruct(
        self,
        x: torch.Tensor,
        phase_mask: torch.Tensor,
        noise_level: int,
        guidance: float,
        steps: int,
        encoding: str = "ddim",
        seed: int = 0,
        region: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode (N, P, H, W) to `noise_level` and decode it with guidance; batched in chunks.

        `encoding`: "ddim" (deterministic inversion, the reference) or "noise" (the forward process
        q(x_L | x_0) with seeded Gaussian noise: no encoder passes, and the noise hides the lesion
        from the healthy-only denoiser instead of encoding it, so decoding heals it even without
        guidance). `region` (N, 1, H, W): the dilated pancreas, for a classifier that takes it.
        """
        ts = strided_timesteps(noise_level, steps)
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        for i in range(0, x.shape[0], self.max_batch):
            xb = x[i : i + self.max_batch].to(self.device)
            pm = phase_mask[i : i + self.max_batch].to(self.device)
            if encoding == "ddim":
                x_l = ddim_encode(self.ddpm, xb, pm, self.alpha_bar, ts)
            elif encoding == "noise":
                eps = torch.randn(xb.shape, generator=gen).to(self.device)
                t = torch.full((xb.shape[0],), noise_level, dtype=torch.long, device=self.device)
                x_l = q_sample(xb, t, eps, self.alpha_bar) * pm[:, :, None, None]
            else:
                raise ValueError(f"Unknown encoding {encoding!r} (ddim or noise).")
            smooth = float(self.defaults.get("grad_smooth_mm", 0.0)) / self.spec.model_spacing_mm
            # a classifier without region input ignores it; one with it raises when it is missing
            guide = self.classifier
            if region is not None:
                guide = functools.partial(guide, region=region[i : i + self.max_batch].to(self.device))
            out.append(ddim_decode(self.ddpm, x_l, pm, self.alpha_bar, ts, guide, guidance, smooth).cpu())
        return torch.cat(out)

    def heatmap(
        self,
        roi_hu: np.ndarray,
        phase_mask: np.ndarray,
        pancreas_mask: np.ndarray,
        spacing_zyx: tuple[float, float, float],
        *,
        noise_level: int | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        seed: int = 0,
        encoding: str | None = None,
        smooth_z_mm: float | None = None,
    ) -> HeatmapResult:
        """The heatmap of one ROI. `roi_hu` (3, Z, Y, X) HU in PHASE_ORDER; absent phases are ignored.

        L, S, steps and the smoothing across slices left as None take the values calibrated with the
        weights (`self.defaults`; L = 250, S = 8, 10 steps and no smoothing across slices before
        calibration).
        """
        noise_level = int(self.defaults["noise_level"] if noise_level is None else noise_level)
        guidance = float(self.defaults["guidance"] if guidance is None else guidance)
        steps = int(self.defaults["steps"] if steps is None else steps)
        smooth_z_mm = float(self.defaults.get("smooth_z_mm", 0.0) if smooth_z_mm is None else smooth_z_mm)
        start = time.perf_counter()
        if not 1 <= steps <= noise_level <= self.t_max:
            raise ValueError(
                f"Need 1 <= steps ({steps}) <= noise_level ({noise_level}) <= {self.t_max}, "
                "the largest timestep the denoiser was trained on."
            )
        torch.manual_seed(seed)  # DDIM (eta = 0) draws nothing; seeded so any future stochastic step is too
        roi_hu = np.asarray(roi_hu, dtype=np.float32)
        phase_mask = np.asarray(phase_mask, dtype=bool)
        batch = prepare_slices(roi_hu, phase_mask, np.asarray(pancreas_mask) > 0, spacing_zyx, self.spec)
        settings = {
            "noise_level": noise_level,
            "guidance": guidance,
            "steps": steps,
            "seed": seed,
            "timesteps": self.schedule.timesteps,
            "phases_used": [int(v) for v in phase_mask],
            "floor": self.defaults["floor"],
            "smooth_mm": self.defaults["smooth_mm"],
            "smooth_z_mm": smooth_z_mm,
            **self.info,
        }
        encoding = encoding or self.defaults.get("encoding", "ddim")
        settings["encoding"] = encoding
        passes = (steps if encoding == "ddim" else 0) + steps + (steps if guidance != 0 else 0)
        if batch.empty:
            return HeatmapResult(
                np.zeros(roi_hu.shape[1:], np.float32),
                passes,
                time.perf_counter() - start,
                settings,
                region=batch.dilated,
            )
        pm = batch.phase_mask.float()[None].expand(batch.x.shape[0], -1)
        recon = self.reconstruct(batch.x, pm, noise_level, guidance, steps, encoding, seed, batch.region)
        keep = pm[:, :, None, None]
        diff = ((batch.x - recon).abs() * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True)
        diff = gaussian_blur2d(diff, self.defaults["smooth_mm"] / self.spec.model_spacing_mm)[:, 0]
        raw = restore(diff, batch, roi_hu.shape[1:])
        raw = smooth_across_slices(raw, batch.dilated, smooth_z_mm, float(spacing_zyx[0]))
        peak = float(raw.max())
        heat = np.clip(raw / max(peak, float(self.defaults["floor"]), 1e-6), 0.0, 1.0).astype(np.float32)
        heat *= batch.dilated
        return HeatmapResult(
            heat, passes, time.perf_counter() - start, settings, peak, len(batch.z), batch.dilated
        )
