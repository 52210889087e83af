"""Rigid (optionally affine) alignment of the other phases onto the reference phase.

Phases of one examination share the scanner's frame, so the transform starts at identity and only
corrects patient motion and breathing: Mattes mutual information (robust to the phase-dependent
enhancement of vessels and organs), sampled inside the body, on a 2 mm grid, three resolution
levels. Quality is the normalised cross-correlation in the body before and after, with a warning
when the result looks poor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from PancreasAILib.atomic import write_text_atomically
from PancreasAILib.errors import AlignmentError
from PancreasAILib.geometry import resample_to_reference, resample_to_spacing
from PancreasAILib.phases import Phase, PhaseSet
from PancreasAILib.progress import ProgressCallback, null_progress

log = logging.getLogger(__name__)

REGISTRATION_GRID_MM = 2.0
POOR_NCC = 0.5  # below this in the body after alignment, tell the user to check
MAX_PLAUSIBLE_SHIFT_MM = 40.0  # more than this between phases of one study is probably a failure
MAX_PLAUSIBLE_ROTATION_DEG = 15.0
# Samples of the metric per pyramid level: a fixed number, not a share of the body, so a large scan costs
# no more than a small one (20 % of a 512x512x120 body was about 1 M samples and 20 s per phase; 50 k
# recovered the synthetic misalignments as well, in a third of the time).
METRIC_SAMPLES_PER_LEVEL = 50_000
METRIC_SAMPLING_MAX = 0.2


@dataclass
class AlignmentResult:
    """How one moving phase was aligned; `transform` maps reference points to moving-image points."""

    phase: Phase
    transform: sitk.Transform
    method: str
    translation_mm: tuple[float, float, float]
    rotation_deg: float
    ncc_before: float
    ncc_after: float
    mutual_information_after: float
    seconds: float
    warning: str | None = None

    def to_report(self) -> dict:
        return {
            "phase": self.phase.value,
            "method": self.method,
            "metric": "ncc_in_body",
            "similarity_before": round(self.ncc_before, 4),
            "similarity_after": round(self.ncc_after, 4),
            "mattes_mutual_information_after": round(self.mutual_information_after, 4),
            "translation_mm": [round(v, 2) for v in self.translation_mm],
            "rotation_deg": round(self.rotation_deg, 2),
            "seconds": round(self.seconds, 2),
            "warning": self.warning,
        }


def _prepare(image: sitk.Image) -> sitk.Image:
    """Downsample to the registration grid and clip HU so metal and dense contrast do not dominate."""
    small = resample_to_spacing(
        sitk.Cast(image, sitk.sitkFloat32), (REGISTRATION_GRID_MM,) * 3, default_value=-1024.0
    )
    return sitk.Clamp(small, sitk.sitkFloat32, -1000.0, 1000.0)


def body_mask(image: sitk.Image) -> sitk.Image:
    """The patient's body (largest region above -400 HU, holes filled, dilated by one voxel)."""
    array = sitk.GetArrayViewFromImage(image) > -400
    labels, count = ndimage.label(array)
    if count == 0:
        raise AlignmentError(
            "No body was found in the reference phase (no voxels above -400 HU).",
            "Check that the reference series is a CT in Hounsfield units.",
        )
    sizes = ndimage.sum_labels(array, labels, index=np.arange(1, count + 1))
    body = labels == 1 + int(np.argmax(sizes))
    body = ndimage.binary_dilation(ndimage.binary_fill_holes(body))
    mask = sitk.GetImageFromArray(body.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _ncc(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray) -> float:
    a, b = fixed[mask].astype(np.float64), moving[mask].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denominator = math.sqrt(float(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


def _rotation_angle_deg(matrix: np.ndarray) -> float:
    cosine = (np.trace(matrix) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0))))


def transform_matrix(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with T(x) = A x + b for a rigid/affine/composite transform, found by probing."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    columns = [np.array(transform.TransformPoint(tuple(e))) - origin for e in np.eye(3)]
    return np.column_stack(columns), origin


def _register(
    fixed: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image,
    initial: sitk.Transform,
    shrink: list[int],
    sigmas_mm: list[float],
    seed: int,
) -> tuple[sitk.Transform, float]:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    method.SetMetricSamplingStrategy(method.RANDOM)
    body_voxels = max(int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))), 1)
    shares = [min(METRIC_SAMPLING_MAX, METRIC_SAMPLES_PER_LEVEL * f**3 / body_voxels) for f in shrink]
    method.SetMetricSamplingPercentagePerLevel(shares, seed)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=200,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas_mm)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    return result, float(method.GetMetricValue())


@dataclass
class PreparedReference:
    """The reference on the registration grid with its body mask: made once, used for every phase."""

    image: sitk.Image
    mask: sitk.Image

    @classmethod
    def from_image(cls, reference: sitk.Image) -> PreparedReference:
        small = _prepare(reference)
        return cls(small, body_mask(small))


def register_phase(
    reference: sitk.Image | PreparedReference,
    moving: sitk.Image,
    phase: Phase,
    *,
    affine: bool = False,
    seed: int = 0,
) -> AlignmentResult:
    """Find the transform that maps `reference` points onto the same anatomy in `moving`."""
    start = time.perf_counter()
    if not isinstance(reference, PreparedReference):
        reference = PreparedReference.from_image(reference)
    fixed_small, mask = reference.image, reference.mask
    moving_small = _prepare(moving)
    centre = fixed_small.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed_small.GetSize()])
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(centre)
    transform, metric = _register(fixed_small, moving_small, mask, rigid, [4, 2, 1], [4.0, 2.0, 0.0], seed)
    method = "rigid (Euler3D, Mattes MI, 2 mm grid)"
    if affine:
        affine_start = sitk.AffineTransform(3)
        matrix, _ = transform_matrix(transform)
        affine_start.SetCenter(centre)
        affine_start.SetMatrix(tuple(matrix.ravel()))
        affine_start.SetTranslation(tuple(np.array(transform.TransformPoint(centre)) - np.array(centre)))
        transform, metric = _register(fixed_small, moving_small, mask, affine_start, [2, 1], [2.0, 0.0], seed)
        method = "rigid then affine (Mattes MI, 2 mm grid)"
    matrix, _ = transform_matrix(transform)
    shift = tuple(float(v) for v in np.array(transform.TransformPoint(centre)) - np.array(centre))
    mask_array = sitk.GetArrayViewFromImage(mask).astype(bool)
    fixed_array = sitk.GetArrayViewFromImage(fixed_small)
    before = resample_to_reference(moving_small, fixed_small, default_value=-1000.0)
    after = resample_to_reference(moving_small, fixed_small, transform=transform, default_value=-1000.0)
    ncc_before = _ncc(fixed_array, sitk.GetArrayViewFromImage(before), mask_array)
    ncc_after = _ncc(fixed_array, sitk.GetArrayViewFromImage(after), mask_array)
    rotation = _rotation_angle_deg(matrix / np.cbrt(max(np.linalg.det(matrix), 1e-6)))
    warning = None
    if ncc_after < POOR_NCC:
        warning = (
            f"Alignment of the {phase.value} phase looks poor (NCC in the body {ncc_after:.2f} < "
            f"{POOR_NCC}): check the overlay before trusting multi-phase results."
        )
    elif ncc_after < ncc_before - 0.02:
        warning = (
            f"Alignment made the {phase.value} phase less similar to the reference "
            f"(NCC {ncc_before:.2f} → {ncc_after:.2f}): check the overlay."
        )
    elif np.linalg.norm(shift) > MAX_PLAUSIBLE_SHIFT_MM or rotation > MAX_PLAUSIBLE_ROTATION_DEG:
        warning = (
            f"The {phase.value} phase moved {np.linalg.norm(shift):.0f} mm / {rotation:.1f}° "
            "relative to the reference, more than patients usually move between phases: check it."
        )
    if warning:
        log.warning(warning)
    return AlignmentResult(
        phase=phase,
        transform=transform,
        method=method,
        translation_mm=shift,
        rotation_deg=rotation,
        ncc_before=ncc_before,
        ncc_after=ncc_after,
        mutual_information_after=metric,
        seconds=time.perf_counter() - start,
        warning=warning,
    )


ALIGNMENT_CACHE_VERSION = 1
CACHED_METHOD_NOTE = "; reused from the alignment cache"


@dataclass(frozen=True)
class AlignmentCache:
    """Registrations already computed, keyed by the exact images and settings (a research convenience).

    Why: an evaluation segments one dataset many times (each subset of phases, each candidate
    model), and registration is about half of a case's time while its result depends only on the two
    images and the settings. The key hashes both images' voxels and geometry with every setting that
    changes the result, so a changed image or setting never reuses a stale transform. Entries hold a
    matrix and numbers only (no paths, no identifiers) and are written atomically."""

    folder: Path

    @staticmethod
    def image_digest(image: sitk.Image) -> str:
        """sha256 of an image's pixel type, geometry and voxels."""
        digest = hashlib.sha256()
        geometry = [image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()]
        digest.update(json.dumps([image.GetPixelIDTypeAsString(), *geometry]).encode())
        digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
        return digest.hexdigest()

    @staticmethod
    def key(reference_digest: str, moving: sitk.Image, *, affine: bool, seed: int) -> str:
        """The entry of one registration: both images (the reference by its digest) and every setting."""
        settings = [ALIGNMENT_CACHE_VERSION, affine, seed, REGISTRATION_GRID_MM, METRIC_SAMPLES_PER_LEVEL]
        parts = [json.dumps(settings), reference_digest, AlignmentCache.image_digest(moving)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def load(self, key: str, phase: Phase) -> AlignmentResult | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        transform = sitk.AffineTransform(3)
        transform.SetMatrix([float(v) for v in np.ravel(entry["matrix"])])
        transform.SetTranslation([float(v) for v in entry["offset"]])
        return AlignmentResult(
            phase=phase,
            transform=transform,
            method=entry["method"] + CACHED_METHOD_NOTE,
            translation_mm=tuple(entry["translation_mm"]),
            rotation_deg=entry["rotation_deg"],
            ncc_before=entry["ncc_before"],
            ncc_after=entry["ncc_after"],
            mutual_information_after=entry["mutual_information_after"],
            seconds=entry["seconds"],
            warning=entry["warning"],
        )

    def store(self, key: str, result: AlignmentResult) -> None:
        matrix, offset = transform_matrix(result.transform)  # exact for rigid and affine transforms
        entry = {
            "version": ALIGNMENT_CACHE_VERSION,
            "method": result.method,
            "matrix": matrix.tolist(),
            "offset": offset.tolist(),
            "translation_mm": list(result.translation_mm),
            "rotation_deg": result.rotation_deg,
            "ncc_before": result.ncc_before,
            "ncc_after": result.ncc_after,
            "mutual_information_after": result.mutual_information_after,
            "seconds": result.seconds,
            "warning": result.warning,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.folder / f"{key}.json", json.dumps(entry))


def _register_or_reuse(
    prepared: Callable[[], PreparedReference],
    reference_digest: Callable[[], str],
    moving: sitk.Image,
    phase: Phase,
    *,
    affine: bool,
    seed: int,
    cache: AlignmentCache | None,
) -> AlignmentResult:
    if cache is None:
        return register_phase(prepared(), moving, phase, affine=affine, seed=seed)
    key = AlignmentCache.key(reference_digest(), moving, affine=affine, seed=seed)
    cached = cache.load(key, phase)
    if cached is not None:
        return cached
    result = register_phase(prepared(), moving, phase, affine=affine, seed=seed)
    cache.store(key, result)
    return result


@dataclass
class AlignedCase:
    """All phases on the reference grid (float32 HU) with how each moving phase was aligned."""

    reference_phase: Phase
    reference: sitk.Image
    images: dict[Phase, sitk.Image]
    alignments: list[AlignmentResult]


def align_phase_set(
    phase_set: PhaseSet,
    *,
    affine: bool = False,
    register: bool = True,
    progress: ProgressCallback = null_progress,
    seed: int = 0,
    cache: AlignmentCache | None = None,
) -> AlignedCase:
    """Register every other phase onto the reference and resample it onto the reference grid.

    With `cache`, a registration of the same two images with the same settings is reused."""
    reference_phase = phase_set.reference_phase
    reference = sitk.Cast(phase_set.reference_image, sitk.sitkFloat32)
    images: dict[Phase, sitk.Image] = {reference_phase: reference}
    results: list[AlignmentResult] = []
    moving_phases = [p for p in phase_set.phases if p != reference_phase]
    progress("align", 0.0, f"reference: {reference_phase.value}")
    # Each made once per case, and only if needed
    prepared = functools.cache(lambda: PreparedReference.from_image(reference))
    reference_digest = functools.cache(lambda: AlignmentCache.image_digest(reference))
    for k, phase in enumerate(moving_phases):
        moving = phase_set.image(phase)
        if register:
            result = _register_or_reuse(
                prepared, reference_digest, moving, phase, affine=affine, seed=seed, cache=cache
            )
            results.append(result)
            transform = result.transform
        else:
            transform = sitk.Transform()
        images[phase] = resample_to_reference(
            sitk.Cast(moving, sitk.sitkFloat32), reference, transform=transform, default_value=-1024.0
        )
        progress("align", (k + 1) / len(moving_phases), f"{phase.value} aligned")
    progress("align", 1.0, "done")
    ordered = {p: images[p] for p in phase_set.phases}
    return AlignedCase(
        reference_phase=reference_phase, reference=reference, images=ordered, alignments=results
    )
