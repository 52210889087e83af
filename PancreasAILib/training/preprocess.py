"""Preprocessing (nnU-Net's second stage): cases -> the arrays both networks train on, cached on disk.

Each case becomes one `.npz` holding
  s1_image (P, Z, Y, X) int16 HU and s1_label (pancreas incl. tumour) on the stage-1 grid of the scan;
  s2_image (P, Z, Y, X) int16 HU, s2_label (0/1/2) and s2_prior (float16) on a box around the true
  pancreas with margins wider than inference uses, so training can jitter the box;
  phase_mask (P,) and has_tumour.
The stage-2 prior is the true gland drawn on the stage-1 grid and interpolated back, i.e. what a
perfect coarse model would hand over; training degrades it further (see `augment.degrade_prior`).
Cases come from the synthesis module (on real anatomy maps) or from an nnU-Net-raw dataset.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.cascade.grids import grid_for_box, image_box, resample_onto
from PancreasAILib.cascade.spec import STAGE1, STAGE2, StageSpec
from PancreasAILib.errors import InputError
from PancreasAILib.geometry import mask_bounding_box
from PancreasAILib.phases import PHASE_ORDER, Phase

TRAIN_MARGIN_EXTRA_MM = (16.0, 16.0, 9.0)  # room to jitter the ROI during training
PROCEDURAL_FIRST_INDEX = 10000  # procedural-anatomy cases share a cache with map cases under their own names


def preprocess_case(
    phases: dict[Phase, sitk.Image], labels: sitk.Image, s1: StageSpec = STAGE1, s2: StageSpec = STAGE2
) -> dict[str, np.ndarray]:
    """The cached arrays of one case (phases on any grids in one physical space; labels 0/1/2)."""
    if not phases:
        raise ValueError("A case needs at least one phase.")
    mask = np.array([p in phases for p in PHASE_ORDER])
    s1_grid = grid_for_box(image_box(labels), s1.spacing)
    gland = sitk.Cast(labels > 0, sitk.sitkFloat32)
    s1_gland = resample_onto(gland, s1_grid)
    out: dict[str, np.ndarray] = {
        "s1_image": _stack(phases, s1_grid),
        "s1_label": (s1_gland >= 0.5).astype(np.uint8),
        "phase_mask": mask,
    }
    box = mask_bounding_box(labels > 0)
    if box is None:
        raise ValueError("The label map holds no pancreas; stage 2 cannot be trained on it.")
    margin = np.asarray(s2.roi_margin_mm) + np.asarray(TRAIN_MARGIN_EXTRA_MM)
    s2_grid = grid_for_box(box.expanded(margin), s2.spacing, min_size=s2.patch[::-1])
    out["s2_image"] = _stack(phases, s2_grid)
    out["s2_label"] = resample_onto(labels, s2_grid, linear=False, pixel=sitk.sitkUInt8)
    coarse = sitk.GetImageFromArray(s1_gland)
    coarse.CopyInformation(s1_grid)
    out["s2_prior"] = resample_onto(coarse, s2_grid, smooth=False).astype(np.float16)
    out["has_tumour"] = np.array(bool((out["s2_label"] == 2).any()))
    return out


def _stack(phases: dict[Phase, sitk.Image], grid: sitk.Image) -> np.ndarray:
    shape = grid.GetSize()[::-1]
    channels = [
        np.rint(resample_onto(phases[p], grid, default=-1024.0)).astype(np.int16)
        if p in phases
        else np.full(shape, -1024, np.int16)
        for p in PHASE_ORDER
    ]
    return np.stack(channels)


def save_case(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one case atomically (uncompressed: loading speed matters more than disk here)."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return path


def load_case(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# --- sources -------------------------------------------------------------------------------------------------


def _refuse_other_generator(cache: Path) -> None:
    """Existing synthetic cases are kept on resume, so they must come from this generator."""
    from PancreasAILib.synthesis.case import GENERATOR_VERSION

    for path in sorted(cache.glob("syn_*.npz")):
        with np.load(path, allow_pickle=False) as data:  # only the small meta entry is read
            meta = json.loads(str(data["meta"]))
        made_by = meta.get("generator_version", 1)
        if made_by != GENERATOR_VERSION:
            raise InputError(
                f"The cache {cache} holds synthetic cases of generator version {made_by} ({path.name}); "
                f"this PancreasAI makes version {GENERATOR_VERSION}, whose cases differ.",
                "Pass a new --cache folder (or delete this one) so every case comes from one generator.",
            )
        if not meta.get("phases_on_truth_anatomy", False):
            raise InputError(
                f"The cache {cache} holds synthetic cases whose arterial and delayed phases are still "
                f"moved against their labels ({path.name}; made before session 13).",
                "Pass a new --cache folder (or delete this one): its cases are made with the phases "
                "moved back onto the labels' anatomy, as registration does at inference.",
            )


def _synthetic_worker(args: tuple) -> str:
    sources, seed, index, out_dir = args
    from PancreasAILib.synthesis import SynthesisConfig, synthesize_case
    from PancreasAILib.synthesis.dataset import anatomy_for_case, on_truth_anatomy

    path = Path(out_dir) / f"syn_{index:05d}.npz"
    if path.exists():
        return path.name
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    # One case in four uses the domain-randomised (SynthSeg-like) intensity model, so no single HU table
    # is learnt; the output grid is already the stage-2 spacing, so preprocessing resamples little.
    randomised = index % 4 == 3
    config = SynthesisConfig(
        spacing_mm=2.0,
        slice_thickness_mm=3.0,
        work_spacing_mm=2.0,
        z_margin_mm=(50.0, 120.0),
        domain_randomise=randomised,
    )
    anatomy = anatomy_for_case(list(sources), seed, index)
    case = synthesize_case(anatomy, config, seed=seed, case_index=index)
    moved = {p: t for p, t in case.transforms.items() if p != Phase.VENOUS}  # venous: the truth's own
    arrays = preprocess_case(on_truth_anatomy(case.phases, moved), case.labels)
    meta = {
        "source": "synthetic",
        "generator_version": case.meta["generator_version"],
        "anatomy": case.meta["anatomy"],
        "seed": seed,
        "index": index,
        "tumours_ml": [round(t.volume_ml, 2) for t in case.tumours],
        "domain_randomised": randomised,
        "phases_on_truth_anatomy": True,
    }
    save_case(path, arrays, meta)
    return path.name


def build_synthetic_cache(
    sources: list[str],
    out_dir: Path,
    *,
    cases: int,
    seed: int,
    first_index: int = 0,
    workers: int = 2,
    progress=None,
) -> list[Path]:
    """Synthesise and preprocess `cases` cases into `out_dir` (resumable: existing cases are kept)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _refuse_other_generator(out_dir)
    jobs = [(tuple(sources), seed, i, str(out_dir)) for i in range(first_index, first_index + cases)]
    names = []
    if workers <= 1:
        for k, job in enumerate(jobs):
            names.append(_synthetic_worker(job))
            if progress:
                progress("preprocess", (k + 1) / len(jobs), names[-1])
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for k, name in enumerate(pool.map(_synthetic_worker, jobs)):
                names.append(name)
                if progress:
                    progress("preprocess", (k + 1) / len(jobs), name)
    return [out_dir / n for n in names]


def build_raw_dataset_cache(raw_dir: Path, out_dir: Path, progress=None) -> list[Path]:
    """Preprocess an nnU-Net-raw dataset (imagesTr/<case>_000{0,1,2}.nii.gz, labelsTr/<case>.nii.gz)."""
    from PancreasAILib.synthesis.dataset import on_truth_anatomy, recorded_motions

    labels_dir = raw_dir / "labelsTr"
    if not labels_dir.is_dir():
        raise InputError(
            f"{raw_dir} has no labelsTr folder; it is not an nnU-Net-raw dataset.",
            "Point --data at a folder with imagesTr/ and labelsTr/ (e.g. made by `pancreasai synth`).",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    label_files = sorted(labels_dir.glob("*.nii.gz"))
    paths = []
    for k, label_file in enumerate(label_files):
        name = label_file.name[: -len(".nii.gz")]
        path = out_dir / f"{name}.npz"
        if not path.exists():
            phases = {
                p: sitk.ReadImage(str(f))
                for p in PHASE_ORDER
                if (f := raw_dir / "imagesTr" / f"{name}_{PHASE_ORDER.index(p):04d}.nii.gz").is_file()
            }
            # a `pancreasai synth` dataset records how each phase was moved: undo it, as registration would
            phases = on_truth_anatomy(phases, recorded_motions(raw_dir, name))
            arrays = preprocess_case(phases, sitk.ReadImage(str(label_file), sitk.sitkUInt8))
            save_case(path, arrays, {"source": str(raw_dir.name), "case": name})
        paths.append(path)
        if progress:
            progress("preprocess", (k + 1) / len(label_files), name)
    return paths
