"""Training-time augmentation on cached arrays: patches, phase dropout, intensity and prior degradation.

The models are judged on anatomy, intensity models and scanners they never saw, so augmentation
leans on intensities (per-phase HU gain and offset, noise, blur) rather than on the synthetic
generator's own statistics, phase dropout trains every subset of phases (venous-only included), and
random in-plane rotation and per-axis scaling stretch a handful of anatomy maps into many bodies
(without it stage 1 learnt where the pancreas sits in 14 maps and missed it in another atlas); an
optional smooth elastic displacement bends organs against each other, which an affine map cannot.
All draws come from the generator passed in, so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from PancreasAILib.cascade.grids import normalise_hu

# Subsets of (arterial, venous, delayed) other than all three, drawn uniformly when dropping phases.
_SUBSETS = [np.array(m, bool) for m in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]]


def drop_phases(
    mask: np.ndarray, rng: np.random.Generator, p_keep_all: float = 0.4, p_venous_only: float = 0.0
) -> np.ndarray:
    """A random non-empty subset of the present phases.

    All of them with probability `p_keep_all`, the venous phase alone with `p_venous_only` (on top of
    the uniform draw, which gives it 1/6 of the rest: most clinical scans are portal-venous only), else
    a uniform subset.
    """
    u = rng.uniform()
    if u < p_keep_all or mask.sum() <= 1:
        return mask.copy()
    if u < p_keep_all + p_venous_only and mask[1]:
        return np.array([False, True, False])
    for _ in range(10):
        subset = _SUBSETS[rng.integers(len(_SUBSETS))] & mask
        if subset.any():
            return subset
    return mask.copy()


def crop_start(
    shape: Sequence[int],
    patch: Sequence[int],
    centre: Sequence[float] | None,
    rng: np.random.Generator,
    jitter: float = 0.35,
) -> np.ndarray:
    """Start index of a `patch` box: around `centre` (with jitter) or anywhere when None; may run off the edge."""
    shape, patch = np.asarray(shape), np.asarray(patch)
    if centre is None:
        return np.array([rng.integers(0, max(s - p, 0) + 1) for s, p in zip(shape, patch, strict=True)])
    centre = np.asarray(centre) + rng.uniform(-jitter, jitter, 3) * patch
    return np.round(centre - patch / 2).astype(int)


@dataclass(frozen=True)
class SpatialDraw:
    """One random in-plane rotation and per-axis scaling, as a matrix from patch to array voxels."""

    matrix: np.ndarray  # (3, 3) in (z, y, x) voxel units: input offset = matrix @ output offset
    displacement: np.ndarray | None = None  # (3, *patch) input-voxel offsets added after the matrix

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        rotation_deg: float = 20.0,
        scale: tuple[float, float] = (0.75, 1.3),
        axis_jitter: float = 0.1,
        elastic_voxels: float = 0.0,
        patch: Sequence[int] | None = None,
    ) -> SpatialDraw:
        # Rotation about z only: z spacing differs from y/x, and scanners differ little in tilt.
        angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
        c, s = np.cos(angle), np.sin(angle)
        rotate = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        # > 1 zooms out (a larger body seen through the same patch); per-axis jitter changes proportions.
        zoom = rng.uniform(*scale) * rng.uniform(1 - axis_jitter, 1 + axis_jitter, 3)
        displacement = None
        if elastic_voxels > 0 and patch is not None:
            displacement = elastic_displacement(rng, patch, elastic_voxels)
        return cls(rotate @ np.diag(zoom), displacement)


def elastic_displacement(rng: np.random.Generator, patch: Sequence[int], amplitude: float) -> np.ndarray:
    """A smooth random displacement field (3, *patch) in voxels, largest offset about `amplitude`.

    White noise smoothed over a quarter of the patch along each axis (so organs bend as wholes rather than
    wobble voxel by voxel); z moves at half the in-plane amplitude because slices are thicker.
    """
    patch = tuple(int(n) for n in patch)
    sigma = [max(1.0, n / 4.0) for n in patch]
    field = np.stack([ndi.gaussian_filter(rng.standard_normal(patch), sigma, mode="wrap") for _ in range(3)])
    field /= max(float(np.abs(field).max()), 1e-6)
    field *= amplitude * rng.uniform(0.5, 1.0)
    field[0] *= 0.5
    return field.astype(np.float32)


def spatial_patch(
    array: np.ndarray, centre: np.ndarray, patch: Sequence[int], draw: SpatialDraw, fill: float, order: int
) -> np.ndarray:
    """The `patch` box around voxel `centre` of `array`, resampled through `draw` (leading axes kept)."""
    out_centre = (np.asarray(patch) - 1) / 2.0
    offset = np.asarray(centre, float) - draw.matrix @ out_centre
    lead = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    out = np.empty((flat.shape[0], *patch), dtype=array.dtype)
    if draw.displacement is not None:
        grid = np.indices(tuple(patch), dtype=np.float32).reshape(3, -1)
        coords = (draw.matrix @ grid + offset[:, None]).reshape(3, *patch) + draw.displacement
        for k, channel in enumerate(flat):
            ndi.map_coordinates(
                channel, coords, output=out[k], order=order, mode="constant", cval=fill, prefilter=False
            )
        return out.reshape(*lead, *patch)
    for k, channel in enumerate(flat):
        ndi.affine_transform(
            channel,
            draw.matrix,
            offset,
            output_shape=tuple(patch),
            output=out[k],
            order=order,
            mode="constant",
            cval=fill,
            prefilter=False,
        )
    return out.reshape(*lead, *patch)


def take_patch(array: np.ndarray, start: np.ndarray, patch: Sequence[int], fill: float) -> np.ndarray:
    """array[..., start:start+patch] with `fill` where the box leaves the array (leading axes kept)."""
    lead = array.shape[:-3]
    out = np.full((*lead, *patch), fill, dtype=array.dtype)
    spatial = array.shape[-3:]
    src, dst = [], []
    for s, n, m in zip(start, patch, spatial, strict=True):
        lo, hi = max(s, 0), min(s + n, m)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = array[(..., *src)]
    return out


# Study contrast: full factor from -100 HU up (fat edge, water, enhancing tissue, bone), none below
# -300 HU (air, lung), a linear ramp between (continuous). The steepest the ramp makes the curve fall is
# 1 - (factor - 1) * 340 / 200 at -300 HU, so factors below 1 + 200/340 keep it monotone.
_STUDY_PIVOT_HU, _STUDY_RAMP_HU = 40.0, (-300.0, -100.0)
_STUDY_RAMP_SLOPE_BOUND = (_STUDY_PIVOT_HU - _STUDY_RAMP_HU[0]) / (_STUDY_RAMP_HU[1] - _STUDY_RAMP_HU[0])


def scale_study_contrast(image_hu: np.ndarray, factor: float) -> np.ndarray:
    """Every phase's tissue contrast about 40 HU (soft tissue) scaled by `factor`; air and lung kept.

    Why: at another tube voltage, or with another contrast dose, the gland, its lesion and the vessels
    all move together, so a network that learnt the gland's absolute HU calls a healthy gland at lower
    contrast hypo-attenuating (session 16: 7 of 10 healthy held-out glands at x0.75).
    """
    low, high = _STUDY_RAMP_HU
    weight = np.clip((image_hu - low) / (high - low), 0.0, 1.0)
    return (image_hu + (factor - 1.0) * (image_hu - _STUDY_PIVOT_HU) * weight).astype(np.float32)


@dataclass(frozen=True)
class IntensityAugmentation:
    """How far training moves each phase's HU away from the generator's own table.

    Why: another scanner, tube voltage, contrast timing or intensity model changes more than the
    overall brightness; it changes how far apart the tissues lie. `standard` (the shipped networks'
    recipe) only scales and shifts soft tissue; `strong` also bends the HU scale with a random monotone
    curve (a lesion stays darker than its gland, by more or less), applies a gamma to the soft-tissue
    window, and widens the gain, offset and noise. `contrast` keeps the standard recipe and adds one
    study-wide contrast factor shared by all phases (`scale_study_contrast`), as another tube voltage
    or bolus gives: every enhancing tissue moves away from water by the same factor in every phase.
    """

    gain: tuple[float, float] = (0.85, 1.15)  # contrast about 40 HU, soft tissue only
    offset_hu: float = 25.0  # uniform in +-offset
    p_blur: float = 0.2
    p_noise: float = 0.3
    noise_hu: tuple[float, float] = (3.0, 15.0)  # standard deviation range of added Gaussian noise
    p_curve: float = 0.0  # share of phases whose HU scale is bent by a random monotone curve
    curve_slopes: tuple[float, float] = (0.6, 1.5)  # slope range of the curve's 100 HU segments
    p_gamma: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    p_study_contrast: float = 0.0  # share of patches whose phases share one contrast factor
    study_contrast: tuple[float, float] = (0.7, 1.35)  # the factor's range (80 kVp ~ 1.3, 140 kVp ~ 0.8)

    def __post_init__(self) -> None:
        ranges = {
            "gain": self.gain,
            "noise_hu": self.noise_hu,
            "curve_slopes": self.curve_slopes,
            "gamma": self.gamma,
            "study_contrast": self.study_contrast,
        }
        for name, (low, high) in ranges.items():
            if not 0 < low <= high:
                raise ValueError(f"{name} {low}..{high} is not a positive range")
        if self.study_contrast[1] >= 1.0 + 1.0 / _STUDY_RAMP_SLOPE_BOUND:
            raise ValueError(f"study_contrast up to {self.study_contrast[1]} would fold the fat-tissue ramp")
        for name in ("p_blur", "p_noise", "p_curve", "p_gamma", "p_study_contrast"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} is not a probability")


INTENSITY_AUGMENTATIONS = {
    "standard": IntensityAugmentation(),
    "strong": IntensityAugmentation(
        gain=(0.7, 1.4), offset_hu=50.0, p_noise=0.4, noise_hu=(3.0, 25.0), p_curve=0.5, p_gamma=0.3
    ),
    "contrast": IntensityAugmentation(p_study_contrast=0.7),
}

# The bent part of the HU scale: fat edge to enhanced parenchyma and vessels; air, fat and bone
# keep their place (above it everything moves with the curve's end, so the scale stays monotone).
_CURVE_KNOTS_HU = np.linspace(-150.0, 350.0, 6)


def bend_hu(channel: np.ndarray, rng: np.random.Generator, slopes: tuple[float, float]) -> np.ndarray:
    """`channel` through a random monotone, continuous piecewise-linear curve (identity below -150 HU)."""
    return apply_bend(channel, draw_bend(rng, slopes))


def draw_bend(rng: np.random.Generator, slopes: tuple[float, float]) -> np.ndarray:
    """Where the curve of `bend_hu` takes its knots (HU)."""
    steps = np.diff(_CURVE_KNOTS_HU) * rng.uniform(slopes[0], slopes[1], len(_CURVE_KNOTS_HU) - 1)
    return _CURVE_KNOTS_HU[0] + np.concatenate([[0.0], np.cumsum(steps)])


def apply_bend(channel: np.ndarray, bent: np.ndarray) -> np.ndarray:
    channel = np.asarray(channel, np.float32)
    out = np.interp(channel, _CURVE_KNOTS_HU, bent).astype(np.float32)
    below, above = channel < _CURVE_KNOTS_HU[0], channel > _CURVE_KNOTS_HU[-1]
    out[below] = channel[below]
    out[above] = channel[above] + np.float32(bent[-1] - _CURVE_KNOTS_HU[-1])
    return out


def gamma_soft_tissue(channel: np.ndarray, gamma: float) -> np.ndarray:
    """A gamma on the -150..350 HU window (ends fixed, so continuous and monotone); outside unchanged."""
    low, high = _CURVE_KNOTS_HU[0], _CURVE_KNOTS_HU[-1]
    inside = (channel > low) & (channel < high)
    out = channel.copy()
    out[inside] = low + (high - low) * ((channel[inside] - low) / (high - low)) ** gamma
    return out


def network_input(image_hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HU -> the networks' input, missing phases zero (as at inference)."""
    normalised = normalise_hu(image_hu)
    normalised[~mask] = 0.0
    return normalised


def augment_hu(
    image_hu: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    recipe: IntensityAugmentation = INTENSITY_AUGMENTATIONS["standard"],
    levels: np.ndarray | None = None,
) -> np.ndarray:
    """Each present phase moved by its own draw of `recipe` (scanner and protocol variety), in HU;
    `network_input` then normalises.

    `levels` (P,), HU values such as each phase's gland level, are moved in place by the same
    pointwise maps as their phase (contrast, bend, gamma, gain, offset; not blur or noise), so a level
    measured on the whole case stays true of the augmented patch."""
    out = image_hu.astype(np.float32)
    probe = np.zeros(out.shape[0], np.float32) if levels is None else levels
    # Drawn only when enabled, so the standard recipe draws exactly what earlier releases drew.
    if recipe.p_study_contrast and rng.uniform() < recipe.p_study_contrast:
        factor = rng.uniform(*recipe.study_contrast)
        out = scale_study_contrast(out, factor)
        probe[:] = scale_study_contrast(probe, factor)
    for p in np.nonzero(mask)[0]:
        channel = out[p]
        if rng.uniform() < recipe.p_blur:
            ndi.gaussian_filter(channel, rng.uniform(0.3, 0.9), output=channel)
        # Drawn only when enabled, so the standard recipe draws exactly what earlier releases drew.
        if recipe.p_curve and rng.uniform() < recipe.p_curve:
            bent = draw_bend(rng, recipe.curve_slopes)
            channel[...] = apply_bend(channel, bent)
            probe[p] = apply_bend(probe[p : p + 1], bent)[0]
        if recipe.p_gamma and rng.uniform() < recipe.p_gamma:
            gamma = rng.uniform(*recipe.gamma)
            channel[...] = gamma_soft_tissue(channel, gamma)
            probe[p] = gamma_soft_tissue(probe[p : p + 1], gamma)[0]
        gain, offset = rng.uniform(*recipe.gain), rng.uniform(-recipe.offset_hu, recipe.offset_hu)
        soft = (channel > -300) & (channel < 400)  # scale around soft tissue, keep air and fat in place
        channel[soft] = (channel[soft] - 40.0) * gain + 40.0 + offset
        if -300 < probe[p] < 400:
            probe[p] = (probe[p] - 40.0) * gain + 40.0 + offset
        if rng.uniform() < recipe.p_noise:
            channel += rng.normal(0.0, rng.uniform(*recipe.noise_hu), channel.shape).astype(np.float32)
    return out


def _disc_footprint(radius: int) -> np.ndarray:
    """An in-plane disc of `radius` voxels, one slice thick (z is coarser than y and x)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2 <= radius**2)[None]


def degrade_prior(prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stage-1 probability as a real coarse model gives it on anatomy it never saw.

    Why so rough: with the near-perfect prior alone, stage 2 learnt to copy it (with the prior
    zeroed its held-out gland Dice fell from 0.71 to 0.42), so it inherited every error of stage 1:
    on held-out maps stage 1 overreaches the gland by a median 3 mm (up to 10 mm), and on another
    atlas it covers only part of it. So the prior is shifted, grown or shrunk by up to 8 mm, blurred,
    cut off beyond a random plane, or absent, and stage 2 has to find the boundary in the image.
    """
    if rng.uniform() < 0.2:
        return np.zeros_like(prior, dtype=np.float32)
    out = prior.astype(np.float32)
    shift = rng.integers(-2, 3, size=3) * np.array([0, 1, 1]) + rng.integers(-1, 2, size=3) * np.array(
        [1, 0, 0]
    )
    out = np.roll(out, tuple(int(s) for s in shift), axis=(0, 1, 2))
    if rng.uniform() < 0.6:
        footprint = _disc_footprint(int(rng.integers(1, 5)))
        grow = rng.uniform() < 0.65  # coarse models overreach more often than they fall short
        out = (ndi.grey_dilation if grow else ndi.grey_erosion)(out, footprint=footprint)
    if rng.uniform() < 0.5:
        sigma = rng.uniform(0.5, 2.5)
        out = ndi.gaussian_filter(out, (rng.uniform(0.0, 1.0), sigma, sigma))
    if rng.uniform() < 0.15:  # stage 1 found only part of the gland
        normal = rng.normal(size=3)
        grid = np.indices(out.shape, dtype=np.float32).reshape(3, -1).T - np.asarray(out.shape) / 2
        side = (grid @ normal).reshape(out.shape) > rng.uniform(-0.3, 0.3) * np.linalg.norm(out.shape)
        out[side] = 0.0
    out = np.clip(out, 0.0, 1.0) ** rng.uniform(0.5, 2.0) * rng.uniform(0.7, 1.0)
    return out.astype(np.float32)


def validation_prior(prior: np.ndarray) -> np.ndarray:
    """The prior validation scores with: the true gland grown by 4 mm and blurred, as stage 1 hands it
    over on held-out anatomy, so model selection rewards finding the boundary rather than copying it."""
    out = ndi.grey_dilation(prior.astype(np.float32), footprint=_disc_footprint(2))
    return np.clip(ndi.gaussian_filter(out, (0.5, 1.0, 1.0)), 0.0, 1.0).astype(np.float32)


def mirror(
    arrays: list[np.ndarray], rng: np.random.Generator, axes: Sequence[int] = (-1, -2)
) -> list[np.ndarray]:
    """Random flips along in-plane axes, applied identically to every array (nnU-Net's mirroring)."""
    for axis in axes:
        if rng.uniform() < 0.5:
            arrays = [np.flip(a, axis=axis) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]
