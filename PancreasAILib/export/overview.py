"""overview.png: axial slices through the main finding, for a person to look at in a second.

Display follows the radiological convention whatever the file's direction matrix: anterior up and
the patient's right on the image left. The volume is viewed (numpy transposes and flips, no copy and
no interpolation) with its index axes permuted towards L, P, S; oblique directions are shown along
their nearest axes. Matplotlib is used without pyplot (Agg canvas), so no GUI and no global state.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from PancreasAILib.export.grid import require_same_grid
from PancreasAILib.export.labels import PANCREAS, TUMOR, label_info
from PancreasAILib.phases import PHASE_ORDER, Phase

WINDOW_HU = (40.0 - 200.0, 40.0 + 200.0)  # abdominal window W400 / L40
TRUTH_COLOR = (0.1, 0.9, 0.3)
FOOTER = "Research use only, not for clinical use"
MAX_SLICES = 3
ZOOM_MIN_MM = 120.0  # smallest field of view around the pancreas
ZOOM_MARGIN_MM = 25.0
MIN_WIDTH_IN = 6.5  # room for the title lines when only one phase is shown


@dataclass(frozen=True)
class _LpsView:
    """How to view a (k, j, i) array as (S, P, L): numpy axis order, flips and per-axis spacing."""

    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing_spl: tuple[float, float, float]

    @classmethod
    def of(cls, image: sitk.Image) -> _LpsView:
        direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
        dominant = np.argmax(np.abs(direction), axis=0)  # physical axis (0 L, 1 P, 2 S) of index axis a
        if sorted(dominant.tolist()) != [0, 1, 2]:
            raise ValueError("The direction matrix is too oblique to display along anatomical axes.")
        index_axis_of = {int(p): a for a, p in enumerate(dominant)}
        spacing = image.GetSpacing()
        order, flips, spacing_spl = [], [], []
        for physical in (2, 1, 0):  # S, P, L
            a = index_axis_of[physical]
            order.append(2 - a)  # numpy axis of index axis a in a (k, j, i) array
            flips.append(bool(direction[physical, a] < 0))
            spacing_spl.append(float(spacing[a]))
        return cls(tuple(order), tuple(flips), tuple(spacing_spl))

    def apply(self, array_kji: np.ndarray) -> np.ndarray:
        view = array_kji.transpose(self.order)
        for axis, flip in enumerate(self.flips):
            if flip:
                view = np.flip(view, axis=axis)
        return view

    def to_index(
        self, spl: tuple[float, float, float], shape_spl: tuple[int, ...]
    ) -> tuple[float, float, float]:
        """Image index (i, j, k) of a point given in view coordinates (s, p, l)."""
        kji = [0.0, 0.0, 0.0]
        for axis, (value, flip) in enumerate(zip(spl, self.flips, strict=True)):
            kji[self.order[axis]] = (shape_spl[axis] - 1 - value) if flip else value
        return float(kji[2]), float(kji[1]), float(kji[0])


def _choose_slices(labels_spl: np.ndarray | None, spacing_s: float) -> tuple[list[int], str]:
    """Up to three axial slices (view indices, superior first) and a sentence saying why."""
    n = None
    if labels_spl is not None:
        n = labels_spl.shape[0]
        tumour = labels_spl == TUMOR
        if tumour.any():
            components, count = ndimage.label(tumour)
            sizes = np.bincount(components.ravel())[1:]
            largest = components == (int(np.argmax(sizes)) + 1)
            s_idx = np.nonzero(largest.any(axis=(1, 2)))[0]
            centre = round(ndimage.center_of_mass(largest)[0])
            what = f"through the largest tumour component ({count} component{'s' if count > 1 else ''})"
            return _around(centre, s_idx.min(), s_idx.max(), n, spacing_s), what
        organ = labels_spl > 0
        if organ.any():
            s_idx = np.nonzero(organ.any(axis=(1, 2)))[0]
            centre = round(ndimage.center_of_mass(organ)[0])
            return _around(
                centre, s_idx.min(), s_idx.max(), n, spacing_s
            ), "through the pancreas centre (no tumour)"
    return [], "through the volume centre (no segmentation)"


def _around(centre: int, low: int, high: int, n: int, spacing_s: float) -> list[int]:
    """The centre slice and two slices inside the finding, or 10 mm apart when it is thin."""
    step = max((centre - low) // 2, (high - centre) // 2)
    if step < 1:
        step = max(1, round(10.0 / spacing_s))
    picks = {min(max(s, 0), n - 1) for s in (centre - step, centre, centre + step)}
    return sorted(
        (int(p) for p in picks), reverse=True
    )  # view index grows towards superior: superior row first


def _zoom_window(labels_spl: np.ndarray | None, spacing_pl: tuple[float, float]) -> tuple[slice, slice]:
    """A square field of view (>= ZOOM_MIN_MM) around the segmentation, or the whole slice without one."""
    if labels_spl is None or not labels_spl.any():
        return slice(None), slice(None)
    footprint = labels_spl.any(axis=0)
    rows, cols = np.nonzero(footprint.any(axis=1))[0], np.nonzero(footprint.any(axis=0))[0]
    extent_mm = max((rows[-1] - rows[0] + 1) * spacing_pl[0], (cols[-1] - cols[0] + 1) * spacing_pl[1])
    half_mm = max(ZOOM_MIN_MM, extent_mm + 2 * ZOOM_MARGIN_MM) / 2
    window = []
    for lo, hi, spacing, n in (
        (rows[0], rows[-1], spacing_pl[0], footprint.shape[0]),
        (cols[0], cols[-1], spacing_pl[1], footprint.shape[1]),
    ):
        half = int(np.ceil(half_mm / spacing))
        centre = (int(lo) + int(hi)) // 2
        start = min(max(centre - half, 0), max(n - 2 * half, 0))
        window.append(slice(start, min(start + 2 * half, n)))
    return window[0], window[1]


def render_overview(
    path: Path,
    images: Mapping[Phase, sitk.Image],
    labels: sitk.Image | None,
    heatmap: sitk.Image | None,
    *,
    title: str,
    truth: sitk.Image | None = None,
) -> Path:
    """Write a PNG: rows = axial slices, columns = phases, with outlines, heatmap and a colour bar."""
    path = Path(path)
    phases = [p for p in PHASE_ORDER if p in images]
    if not phases:
        raise ValueError("The overview needs at least one phase image.")
    reference = images[phases[0]]
    for phase in phases[1:]:
        require_same_grid(images[phase], reference, f"{phase} image")
    for name, extra in (("label map", labels), ("heatmap", heatmap), ("ground truth", truth)):
        if extra is not None:
            require_same_grid(extra, reference, name)
    view = _LpsView.of(reference)

    def spl(image: sitk.Image | None) -> np.ndarray | None:
        return None if image is None else view.apply(sitk.GetArrayViewFromImage(image))

    labels_spl, truth_spl, heat_spl = spl(labels), spl(truth), spl(heatmap)
    phase_spl = {p: spl(images[p]) for p in phases}
    shape = phase_spl[phases[0]].shape
    slices, why = _choose_slices(labels_spl, view.spacing_spl[0])
    if not slices:
        slices = sorted({shape[0] * 3 // 4, shape[0] // 2, shape[0] // 4}, reverse=True)[:MAX_SLICES]
    rows, cols = _zoom_window(labels_spl, view.spacing_spl[1:])
    heat_max = float(np.max(heat_spl)) if heat_spl is not None else 0.0
    show_heat = heat_spl is not None and heat_max > 0

    panel = 3.0  # inches per panel side (panels keep the physical aspect ratio)
    height_px = (rows.stop or shape[1]) - (rows.start or 0)
    width_px = (cols.stop or shape[2]) - (cols.start or 0)
    aspect = view.spacing_spl[1] / view.spacing_spl[2]  # row (P) spacing / column (L) spacing
    panel_w = panel * min(2.0, width_px / (height_px * aspect))
    fig_w = max(panel_w * len(phases) + (1.0 if show_heat else 0.2) + 0.2, MIN_WIDTH_IN)
    fig_h = panel * len(slices) + 1.25
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=0.1 / fig_w,
        right=1 - (1.0 if show_heat else 0.2) / fig_w,
        bottom=0.35 / fig_h,
        top=1 - 0.9 / fig_h,
        wspace=0.04,
        hspace=0.12,
    )
    axes = fig.subplots(len(slices), len(phases), squeeze=False)
    heat_artist = None
    for row, s in enumerate(slices):
        i, j, k = view.to_index((s, (shape[1] - 1) / 2, (shape[2] - 1) / 2), shape)
        z_mm = reference.TransformContinuousIndexToPhysicalPoint((i, j, k))[2]
        for col, phase in enumerate(phases):
            ax = axes[row][col]
            ax.imshow(
                phase_spl[phase][s, rows, cols],
                cmap="gray",
                vmin=WINDOW_HU[0],
                vmax=WINDOW_HU[1],
                aspect=aspect,
                interpolation="bilinear",
            )
            if show_heat:
                layer = np.ma.masked_less_equal(heat_spl[s, rows, cols], 0.05 * heat_max)
                heat_artist = ax.imshow(
                    layer,
                    cmap="inferno",
                    vmin=0.0,
                    vmax=heat_max,
                    alpha=0.45,
                    aspect=aspect,
                    interpolation="nearest",
                )
            if labels_spl is not None:
                _outline(ax, labels_spl[s, rows, cols] > 0, label_info(PANCREAS).color, "-")
                _outline(ax, labels_spl[s, rows, cols] == TUMOR, label_info(TUMOR).color, "-")
            if truth_spl is not None:
                _outline(ax, truth_spl[s, rows, cols] > 0, TRUTH_COLOR, "--")
                _outline(ax, truth_spl[s, rows, cols] == TUMOR, TRUTH_COLOR, ":")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{phase.value}  S {z_mm:+.1f} mm", fontsize=9, pad=2)
            if row == 0 and col == 0:
                for x, y, text in ((0.04, 0.5, "R"), (0.96, 0.5, "L"), (0.5, 0.95, "A")):
                    ax.text(
                        x,
                        y,
                        text,
                        transform=ax.transAxes,
                        color="yellow",
                        fontsize=9,
                        ha="center",
                        va="center",
                    )
    if heat_artist is not None:
        cax = fig.add_axes((1 - 0.8 / fig_w, 0.35 / fig_h + 0.1, 0.15 / fig_w, 0.6))
        fig.colorbar(heat_artist, cax=cax, label="anomaly heatmap")
    zoom = "" if rows == slice(None) else ", zoomed on the pancreas"
    subtitle = f"Axial slices {why}{zoom}"
    if labels_spl is not None or truth_spl is not None:
        outlines = ["pancreas orange, tumour red"] if labels_spl is not None else []
        outlines += ["reference dashed green"] if truth_spl is not None else []
        subtitle += f"; outlines: {', '.join(outlines)}"
    subtitle = "\n".join(textwrap.wrap(subtitle, width=int(fig_w * 12)))
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10, y=1 - 0.08 / fig_h, va="top")
    fig.text(0.5, 0.06 / fig_h, FOOTER, ha="center", va="bottom", fontsize=9, color="darkred")
    fig.savefig(str(path), format="png", facecolor="white")
    return path


def _outline(ax, mask: np.ndarray, color: tuple[float, float, float], style: str) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.3, linestyles=style)
