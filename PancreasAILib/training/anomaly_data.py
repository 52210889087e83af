"""Synthetic ROI cases for the anomaly models, cached on disk, and the 2D slice bank they train from.

Synthesis is the slow part (about a second a case), and training and evaluation need the same cases
many times, so each case is made once and kept as a compressed `.npz`: the stage-2 ROI (3 phases,
int16 HU, spacing 1.5 x 1.5 x 3 mm, as the cascade hands it over) and its labels (1 pancreas,
2 tumour). The ROI box is the pancreas bounding box plus a random margin, imitating the cascade.

The networks never see a voxel label: the bank turns labels into the dilated pancreas region
(where crops are centred, as the predicted mask does at inference) and one image-level bit per
crop (tumour present or not).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.anomaly.preprocess import PreprocessSpec, prepare_slices
from PancreasAILib.errors import InputError
from PancreasAILib.phases import PHASE_ORDER
from PancreasAILib.synthesis import SynthesisConfig, synthesize_case
from PancreasAILib.synthesis.case import GENERATOR_VERSION
from PancreasAILib.synthesis.dataset import anatomy_for_case, resolve_anatomy

ROI_SPACING_XYZ = (1.5, 1.5, 3.0)  # the cascade's stage-2 ROI grid


def fast_config(domain_randomise: bool, p_tumour: float) -> SynthesisConfig:
    """The quick synthesis grid the anomaly cache uses (already at the ROI spacing)."""
    return SynthesisConfig(
        spacing_mm=ROI_SPACING_XYZ[0],
        slice_thickness_mm=ROI_SPACING_XYZ[2],
        work_spacing_mm=2.0,
        z_margin_mm=(20.0, 30.0),
        domain_randomise=domain_randomise,
        p_tumour=p_tumour,
    )


@dataclass
class CacheSpec:
    """Which cases to make: all from (seed, index), so a cache can be resumed or rebuilt identically."""

    anatomy: str  # folder of label maps (../shared/data/anatomy)
    split: str  # "train" or "heldout"
    cases: int
    seed: int
    dr_fraction: float = 0.35  # share of domain-randomised cases (other intensity models)
    p_tumour: float = 0.8
    roi_margin_mm: tuple[float, float] = (10.0, 30.0)  # in-plane margin around the pancreas, per side
    generator_version: int = GENERATOR_VERSION  # cases of another generator differ: never mixed in


def _roi_box(
    labels: np.ndarray, rng: np.random.Generator, margin_mm: tuple[float, float]
) -> tuple[slice, ...]:
    """The pancreas (with tumour) bounding box plus a random margin: what stage 1 would crop."""
    idx = np.argwhere(labels > 0)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    sx, _, sz = ROI_SPACING_XYZ
    m_xy = rng.uniform(*margin_mm, size=4) / sx
    m_z = rng.uniform(3.0, 9.0, size=2) / sz
    lo = lo - np.array([m_z[0], m_xy[0], m_xy[1]]).round().astype(int)
    hi = hi + np.array([m_z[1], m_xy[2], m_xy[3]]).round().astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, labels.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def make_cached_case(spec: CacheSpec, index: int, out_dir: Path) -> Path:
    """Synthesise case `index` and write it as `case_XXXX.npz` (atomic; skipped when present)."""
    path = out_dir / f"case_{index:04d}.npz"
    if path.is_file():
        return path
    sources = resolve_anatomy(spec.anatomy, spec.split)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index, 0xA40]))
    dr = bool(rng.uniform() < spec.dr_fraction)
    anatomy = anatomy_for_case(sources, spec.seed, index)
    case = synthesize_case(anatomy, fast_config(dr, spec.p_tumour), seed=spec.seed, case_index=index)
    labels = sitk.GetArrayFromImage(case.labels)
    box = _roi_box(labels, rng, spec.roi_margin_mm)
    roi = np.stack([sitk.GetArrayFromImage(case.phases[p])[box] for p in PHASE_ORDER]).astype(np.int16)
    meta = {
        "index": index,
        "seed": spec.seed,
        "split": spec.split,
        "anatomy": case.meta["anatomy"],
        "domain_randomise": dr,
        "tumours": len(case.tumours),
        "tumour_ml": [round(t.volume_ml, 2) for t in case.tumours],
        "spacing_xyz": list(ROI_SPACING_XYZ),
    }
    tmp = out_dir / f".case_{index:04d}.tmp.npz"
    np.savez_compressed(tmp, roi_hu=roi, labels=labels[box].astype(np.uint8), meta=json.dumps(meta))
    os.replace(tmp, path)
    return path


def build_cache(spec: CacheSpec, out_dir: Path, log=print) -> list[Path]:
    """Make every case of `spec` under `out_dir` (resumable: existing cases are kept)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps(spec.__dict__, default=list))
    spec_file = out_dir / "spec.json"
    if spec_file.is_file():  # never mix cases made with other settings in one folder
        old = {"generator_version": 1, **json.loads(spec_file.read_text())}  # unrecorded before version 2

        def same(a: dict) -> dict:  # what must match: all but the count, with the anatomy path resolved
            return {k: str(Path(v).resolve()) if k == "anatomy" else v for k, v in a.items() if k != "cases"}

        was, now = same(old), same(record)
        if was != now:
            changed = ", ".join(
                f"{k.replace('_', ' ')} {was.get(k)} → {now.get(k)}"
                for k in sorted(was.keys() | now.keys())
                if was.get(k) != now.get(k)
            )
            raise InputError(
                f"The cache {out_dir} holds cases made with other settings ({changed}).",
                "Use another cache folder, or delete this one.",
            )
        record["cases"] = max(int(old.get("cases", 0)), spec.cases)
    spec_file.write_text(json.dumps(record, indent=2) + "\n")
    paths, start = [], time.time()
    for i in range(spec.cases):
        paths.append(make_cached_case(spec, i, out_dir))
        if (i + 1) % 20 == 0:
            log(f"cache {out_dir.name}: {i + 1}/{spec.cases} cases, {time.time() - start:.0f} s")
    return paths


@dataclass
class CachedCase:
    roi_hu: np.ndarray  # (3, Z, Y, X) float32 HU
    labels: np.ndarray  # (Z, Y, X) uint8
    meta: dict

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm, (z, y, x) like the arrays."""
        z, y, x = (float(v) for v in self.meta.get("spacing_xyz", ROI_SPACING_XYZ)[::-1])
        return z, y, x


def load_cached_case(path: Path) -> CachedCase:
    with np.load(path) as data:
        return CachedCase(
            roi_hu=data["roi_hu"].astype(np.float32),
            labels=data["labels"],
            meta=json.loads(str(data["meta"])),
        )


def list_cases(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("case_*.npz"))


class SliceBank:
    """Model-space slices of cached cases in memory, and random training crops from them.

    Each slice keeps its normalised phases, its dilated-pancreas region and (for the image-level
    label only) its tumour mask. Crops are centred on a random region pixel, so they always show
    pancreas, as the inference crop always does.
    """

    def __init__(self, paths: list[Path], spec: PreprocessSpec) -> None:
        self.spec = spec
        images, regions, tumours = [], [], []
        for path in paths:
            case = load_cached_case(path)
            batch = prepare_slices(
                case.roi_hu,
                np.ones(3, dtype=bool),
                case.labels > 0,
                case.spacing_zyx,
                spec,
                extra=(case.labels == 2).astype(np.float32),
            )
            images.append(batch.x.numpy().astype(np.float16))  # half the memory
            regions.append(batch.region.numpy()[:, 0] > 0.5)
            tumours.append(batch.extra.numpy()[:, 0] > 0.5)
        self.images, self.regions, self.tumours = images, regions, tumours
        self.index = [(c, s) for c, im in enumerate(images) for s in range(im.shape[0])]
        self.positive_index = [(c, s) for c, s in self.index if self.tumours[c][s].any()]
        self.positive_fraction = len(self.positive_index) / max(1, len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def crop(
        self, rng: np.random.Generator, size: int, from_positive: bool = False
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """One (3, size, size) crop, its (size, size) dilated-pancreas region and its count of tumour
        pixels (the source of image-level labels).

        `from_positive`: take the slice from those with tumour (to balance the classifier's classes).
        """
        pool = self.positive_index if from_positive and self.positive_index else self.index
        c, s = pool[int(rng.integers(len(pool)))]
        image, region, tumour = self.images[c][s], self.regions[c][s], self.tumours[c][s]
        where = np.argwhere(region)
        cy, cx = where[int(rng.integers(len(where)))] if len(where) else np.array(region.shape) // 2
        y0, x0 = int(cy) - size // 2, int(cx) - size // 2
        h, w = region.shape
        pad = ((0, 0), (max(0, -y0), max(0, y0 + size - h)), (max(0, -x0), max(0, x0 + size - w)))
        if any(p for pair in pad for p in pair):
            image = np.pad(image, pad, mode="edge")
            region = np.pad(region, pad[1:], mode="constant")
            tumour = np.pad(tumour, pad[1:], mode="constant")
            y0, x0 = y0 + pad[1][0], x0 + pad[2][0]
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        crop = image[:, window[0], window[1]]
        return crop.astype(np.float32), region[window].astype(np.float32), int(tumour[window].sum())

    def healthy_batch(self, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
        """Crops without a single tumour pixel (the denoiser learns the healthy appearance only)."""
        crops: list[np.ndarray] = []
        while len(crops) < n:
            crop, _, tumour_px = self.crop(rng, size)
            if tumour_px == 0:
                crops.append(crop)
        return np.stack(crops)

    def labelled_batch(
        self, rng: np.random.Generator, n: int, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half tumour crops (>= min_tumour_px), half tumour-free: crops, regions (n, 1, size, size)
        and image-level labels 1/0."""
        crops, regions, labels = [], [], []
        for i in range(n):
            want = i % 2 == 0
            for _ in range(50):
                crop, region, tumour_px = self.crop(rng, size, from_positive=want)
                if (tumour_px >= self.spec.min_tumour_px) if want else tumour_px == 0:
                    break
            crops.append(crop)
            regions.append(region[None])
            labels.append(float(tumour_px >= self.spec.min_tumour_px))
        return np.stack(crops), np.stack(regions), np.asarray(labels, dtype=np.float32)


def random_phase_mask(rng: np.random.Generator, n: int, p_all: float = 0.4) -> np.ndarray:
    """(n, 3) bool: all phases with `p_all`, otherwise a uniform non-empty proper subset (venous-only too)."""
    subsets = np.array([[a, v, d] for a in (0, 1) for v in (0, 1) for d in (0, 1)][1:-1], dtype=bool)
    out = np.ones((n, 3), dtype=bool)
    drop = rng.uniform(size=n) >= p_all
    out[drop] = subsets[rng.integers(len(subsets), size=int(drop.sum()))]
    return out
