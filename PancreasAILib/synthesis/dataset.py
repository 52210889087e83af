"""Write synthetic cases as an nnU-Net-raw / MSD-style dataset, optionally with DICOM series.

Layout under the output folder::

    imagesTr/<case>_0000.nii.gz   arterial   (channels follow PHASE_ORDER)
    imagesTr/<case>_0001.nii.gz   venous     (the reference: labels are on its grid)
    imagesTr/<case>_0002.nii.gz   delayed
    labelsTr/<case>.nii.gz        0 background, 1 pancreas, 2 tumour
    cases/<case>.json             tumour facts, misalignment per phase, HU table, anatomy used
    dataset.json                  nnU-Net v2 fields plus a "pancreasai" block (seed, anatomy, config)
    dicom/<case>/<phase>/         with --dicom: one CT series per phase, one study per case

Cases run in parallel processes; each case depends only on (seed, case index), so the files are
the same whatever the worker count. The folder appears in one rename when complete.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib import __version__
from PancreasAILib.atomic import atomic_output_dir, write_file_atomically, write_text_atomically
from PancreasAILib.dicom_write import SeriesHeader, write_dicom_series
from PancreasAILib.errors import InputError
from PancreasAILib.phases import PHASE_ORDER, Phase
from PancreasAILib.synthesis.anatomy import (
    Anatomy,
    anatomy_name,
    anatomy_split,
    list_anatomy_maps,
    load_anatomy_cached,
)
from PancreasAILib.synthesis.case import GENERATOR_VERSION, SynthesisConfig, SyntheticCase, synthesize_case
from PancreasAILib.synthesis.procedural import procedural_anatomy

PROCEDURAL = "procedural"
LABELS = {"background": 0, "pancreas": 1, "tumour": 2}
SERIES = {  # description, seconds after injection
    Phase.ARTERIAL: ("Art Pancreatic", 40.0),
    Phase.VENOUS: ("Portal venous", 70.0),
    Phase.DELAYED: ("Delayed", 180.0),
}
CONTRAST_AGENT = "Iohexol 350 mgI/mL"


@dataclass
class DatasetSummary:
    out_dir: Path
    cases: list[str]
    tumours: int
    seconds: float


def case_name(index: int) -> str:
    return f"PANSYN_{index:04d}"


def resolve_anatomy(anatomy: str | Path, split: str = "train") -> list[str]:
    """Label-map paths to use (as strings), or ["procedural"]. `split`: train, heldout or all."""
    if str(anatomy) == PROCEDURAL:
        return [PROCEDURAL]
    root = Path(anatomy)
    if root.is_file():
        return [str(root)]
    if split == "all":
        return [str(p) for p in list_anatomy_maps(root)]
    if split not in ("train", "heldout"):
        raise InputError(f"Unknown anatomy split {split!r}.", "Use --split train, heldout or all.")
    chosen = anatomy_split(root)[split]
    if not chosen:
        raise InputError(
            f"The anatomy folder {root} holds none of the {split} maps of the fixed split.",
            "Point --anatomy at ../shared/data/anatomy, or pass --split all to use every map.",
        )
    return [str(p) for p in chosen]


def anatomy_for_case(sources: list[str], seed: int, index: int) -> Anatomy:
    """Round-robin over the maps; a fresh procedural anatomy per case when procedural."""
    if sources == [PROCEDURAL]:
        return procedural_anatomy(int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0]))
    return load_anatomy_cached(sources[index % len(sources)])


def remake_case(
    dataset_dir: Path | str, name: str, anatomy: Path | str | None = None, keep_organ_labels: bool = True
) -> SyntheticCase:
    """Synthesise one case of a written dataset again, from its recorded seed and configuration.

    Why: a dataset keeps the images and the pancreas/tumour labels only, while an analysis of where
    predictions go wrong needs the full organ map; the generator is deterministic, so it can give
    that map back. `anatomy` replaces the recorded anatomy folder (e.g. when the dataset was made
    from another working directory). Refused when the labels do not come out identical (a dataset
    made by another generator version, or edited since).
    """
    root = Path(dataset_dir)
    recorded = json.loads((root / "dataset.json").read_text())["pancreasai"]
    record = json.loads((root / "cases" / f"{name}.json").read_text())
    config = replace(SynthesisConfig.from_dict(recorded["config"]), keep_organ_labels=keep_organ_labels)
    seed, index = int(recorded["seed"]), int(name.rsplit("_", 1)[1])
    source = str(anatomy or recorded["anatomy_source"])
    if source == PROCEDURAL:
        case_anatomy = anatomy_for_case([PROCEDURAL], seed, index)
    else:
        maps = {anatomy_name(p): p for p in list_anatomy_maps(source)}
        if record["anatomy"] not in maps:
            raise InputError(
                f"{name} was made from the anatomy map {record['anatomy']}, which is not under {source}.",
                "Pass the anatomy folder the dataset was made from.",
            )
        case_anatomy = load_anatomy_cached(str(maps[record["anatomy"]]))
    case = synthesize_case(case_anatomy, config, seed=seed, case_index=index)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(root / record["label"])))
    remade = sitk.GetArrayFromImage(case.labels)
    if remade.shape != truth.shape or not np.array_equal(remade, truth):
        raise InputError(
            f"{name} did not come out identical to {root / record['label']}.",
            f"Remake it with the generator that wrote it (version {recorded.get('generator_version')}; "
            f"this one is {GENERATOR_VERSION}).",
        )
    return case


def recorded_motions(dataset_dir: Path | str, name: str) -> dict[Phase, sitk.Transform]:
    """How each phase of a written case was moved against the anatomy its truth was drawn on
    (venous): per moved phase, the ITK transform taking a point of the truth's anatomy to the same
    anatomy in that phase. Empty without a record (not a `pancreasai synth` dataset)."""
    record_file = Path(dataset_dir) / "cases" / f"{name}.json"
    if not record_file.is_file():
        return {}
    motions = json.loads(record_file.read_text()).get("misalignment") or {}
    return {
        Phase(phase): sitk.Euler3DTransform(
            m["center_mm"], *np.radians(m["rotation_deg"]).tolist(), m["translation_mm"]
        )
        for phase, m in motions.items()
        if not m.get("reference")
    }


def on_truth_anatomy(
    phases: dict[Phase, sitk.Image], motions: dict[Phase, sitk.Transform]
) -> dict[Phase, sitk.Image]:
    """Each phase moved back by its recorded motion (`recorded_motions`; a phase without one is kept),
    so it shows the anatomy the truth was drawn on.

    Why: at inference the phases are registered to the reference before the networks see them, and
    a single phase is its own reference; training on phases still moved by the generator (2-4 mm)
    teaches the networks outlines a few millimetres off in every input without the venous phase."""
    return {
        phase: image
        if motions.get(phase) is None
        else sitk.Resample(image, image, motions[phase], sitk.sitkLinear, -1024.0, image.GetPixelID())
        for phase, image in phases.items()
    }


def write_nifti(path: Path, image: sitk.Image) -> Path:
    """Atomic .nii.gz with fast, reproducible compression (gzip level 1, no timestamp)."""

    def writer(tmp: Path) -> None:
        raw = tmp.with_name(tmp.name.removesuffix(".gz"))
        try:
            sitk.WriteImage(image, str(raw), False)
            tmp.write_bytes(gzip.compress(raw.read_bytes(), compresslevel=1, mtime=0))
        finally:
            raw.unlink(missing_ok=True)

    return write_file_atomically(Path(path), writer)


def write_case_dicom(
    case: SyntheticCase, out: Path, name: str, seed: int, index: int, thickness: float
) -> None:
    from pydicom.uid import generate_uid

    uid = lambda what: generate_uid(entropy_srcs=[f"pancreasai-synth-{seed}-{index}-{what}"])  # noqa: E731
    start = 8 * 3600.0 + (index % 480) * 60.0
    for number, phase in enumerate((p for p in PHASE_ORDER if p in case.phases), start=2):
        description, delay = SERIES[phase]
        header = SeriesHeader(
            patient_id=f"PANSYN{index:04d}",
            patient_name=f"Synthetic^{name}",
            study_uid=uid("study"),
            series_uid=uid(phase.value),
            frame_of_reference_uid=uid("for"),
            series_description=f"{description} {thickness:g}",
            protocol_name="Pancreas multiphase (synthetic)",
            contrast_agent=CONTRAST_AGENT,
            acquisition_time_s=start + delay,
            series_number=number,
        )
        target = out / "dicom" / name / phase.value
        staging = target.parent / f".{phase.value}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        write_dicom_series(case.phases[phase], staging, header)
        os.replace(staging, target)


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def make_case(
    index: int, sources: list[str], config: SynthesisConfig, seed: int, out: str, dicom: bool
) -> dict:
    """Synthesise and write one case; returns its record (run in a worker process)."""
    out_dir = Path(out)
    name = case_name(index)
    anatomy = anatomy_for_case(sources, seed, index)
    case = synthesize_case(anatomy, config, seed=seed, case_index=index)
    images = []
    for phase in (p for p in PHASE_ORDER if p in case.phases):
        channel = [p for p in PHASE_ORDER if p in config.phases].index(phase)
        path = out_dir / "imagesTr" / f"{name}_{channel:04d}.nii.gz"
        write_nifti(path, case.phases[phase])
        images.append(f"imagesTr/{path.name}")
    write_nifti(out_dir / "labelsTr" / f"{name}.nii.gz", case.labels)
    record = {
        "case": name,
        "anatomy": anatomy.name,
        "images": images,
        "label": f"labelsTr/{name}.nii.gz",
        "tumours": [t.to_dict() for t in case.tumours],
        "misalignment": {p.value: m for p, m in case.misalignment.items()},
        "meta": case.meta,
    }
    write_text_atomically(out_dir / "cases" / f"{name}.json", json.dumps(record, indent=1))
    if dicom:
        write_case_dicom(case, out_dir, name, seed, index, config.slice_thickness_mm)
    return record


def write_dataset(
    out_dir: Path | str,
    anatomy: str | Path = PROCEDURAL,
    n_cases: int = 10,
    seed: int = 0,
    config: SynthesisConfig | None = None,
    split: str = "train",
    workers: int = 2,
    dicom: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetSummary:
    """Write `n_cases` synthetic cases to `out_dir` (refuses a non-empty folder unless `overwrite`)."""
    if n_cases < 1:
        raise InputError(f"--cases must be at least 1 (got {n_cases}).", "Pass --cases N with N >= 1.")
    config = config or SynthesisConfig()
    sources = resolve_anatomy(anatomy, split)
    started = time.perf_counter()
    with atomic_output_dir(Path(out_dir), overwrite=overwrite) as staging:
        records = _run(sources, config, seed, n_cases, staging, dicom, workers, progress)
        phases = [p for p in PHASE_ORDER if p in config.phases]
        dataset = {
            "name": "PancreasAI synthetic multi-phase pancreas CT",
            "description": "Label-driven synthetic arterial/venous/delayed CT with inserted pancreatic "
            "tumours (research use only, not for clinical use).",
            "channel_names": {str(i): "CT" for i in range(len(phases))},
            "labels": LABELS,
            "numTraining": len(records),
            "file_ending": ".nii.gz",
            "training": [{"image": r["images"], "label": r["label"]} for r in records],
            "pancreasai": {
                "generator": f"PancreasAILib.synthesis {__version__}",
                "generator_version": GENERATOR_VERSION,
                "seed": int(seed),
                "channel_phases": {str(i): p.value for i, p in enumerate(phases)},
                "reference_phase": Phase.VENOUS.value,
                "anatomy_source": str(anatomy),
                "anatomy_split": split if sources != [PROCEDURAL] else PROCEDURAL,
                "anatomy_maps": sorted({r["anatomy"] for r in records}),
                "config": config.to_dict(),
                "tumours": sum(len(r["tumours"]) for r in records),
                "research_use_only": True,
            },
        }
        write_text_atomically(staging / "dataset.json", json.dumps(dataset, indent=1))
    return DatasetSummary(
        out_dir=Path(out_dir),
        cases=[r["case"] for r in records],
        tumours=sum(len(r["tumours"]) for r in records),
        seconds=time.perf_counter() - started,
    )


def _run(
    sources: list[str],
    config: SynthesisConfig,
    seed: int,
    n_cases: int,
    staging: Path,
    dicom: bool,
    workers: int,
    progress: bool,
) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=n_cases, desc="synth", unit="case", file=sys.stderr, disable=not progress)
    records: list[dict] = []
    try:
        if workers <= 1:
            _init_worker()
            for i in range(n_cases):
                records.append(make_case(i, sources, config, seed, str(staging), dicom))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = [
                    pool.submit(make_case, i, sources, config, seed, str(staging), dicom)
                    for i in range(n_cases)
                ]
                try:
                    for future in as_completed(futures):
                        records.append(future.result())
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return sorted(records, key=lambda r: r["case"])
