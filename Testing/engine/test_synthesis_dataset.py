"""Synthetic dataset writer, `pancreasai synth` and the on-the-fly training dataset (issue 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from PancreasAILib.errors import ExitCode, OutputExistsError
from PancreasAILib.phases import PHASE_ORDER
from PancreasAILib.synthesis.case import SynthesisConfig
from PancreasAILib.synthesis.dataset import write_dataset
from PancreasAILib.synthesis.onthefly import SyntheticCTDataset

CONFIG = SynthesisConfig.coarse(z_margin_mm=(20.0, 25.0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = write_dataset(
        out, anatomy="procedural", n_cases=2, seed=5, config=CONFIG, workers=1, dicom=True, progress=False
    )
    return out, summary


def test_dataset_layout_and_dataset_json(dataset):
    out, summary = dataset
    assert summary.cases == ["PANSYN_0000", "PANSYN_0001"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "pancreas": 1, "tumour": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT", "1": "CT", "2": "CT"}
    assert meta["pancreasai"]["channel_phases"] == {"0": "arterial", "1": "venous", "2": "delayed"}
    assert meta["pancreasai"]["seed"] == 5 and meta["pancreasai"]["anatomy_split"] == "procedural"
    assert len(meta["pancreasai"]["anatomy_maps"]) == 2
    for name in summary.cases:
        label = sitk.ReadImage(str(out / "labelsTr" / f"{name}.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2}
        for channel in range(3):
            image = sitk.ReadImage(str(out / "imagesTr" / f"{name}_{channel:04d}.nii.gz"))
            assert image.GetPixelID() == sitk.sitkInt16 and image.GetSize() == label.GetSize()
            assert image.GetOrigin() == pytest.approx(label.GetOrigin())
        record = json.loads((out / "cases" / f"{name}.json").read_text())
        assert set(record["misalignment"]) == {p.value for p in PHASE_ORDER}
        assert record["misalignment"]["venous"]["translation_mm"] == [0.0, 0.0, 0.0]
        for tumour in record["tumours"]:
            assert {"region", "volume_ml", "centre_mm", "longest_axial_diameter_mm", "tumour_hu"} <= set(
                tumour
            )
    assert not list(out.parent.glob(".ds.partial-*"))


def test_dicom_series_have_phase_headers_in_one_study(dataset):
    import pydicom

    out, summary = dataset
    series = {}
    for phase in PHASE_ORDER:
        files = sorted((out / "dicom" / summary.cases[0] / phase.value).glob("*.dcm"))
        assert files
        series[phase] = pydicom.dcmread(files[0])
    assert len({ds.StudyInstanceUID for ds in series.values()}) == 1
    assert len({ds.FrameOfReferenceUID for ds in series.values()}) == 1
    assert len({ds.SeriesInstanceUID for ds in series.values()}) == 3
    times = [float(series[p].AcquisitionTime) for p in PHASE_ORDER]
    assert times == sorted(times) and len(set(times)) == 3
    assert series[PHASE_ORDER[0]].SeriesDescription.startswith("Art Pancreatic")
    assert series[PHASE_ORDER[1]].SeriesDescription.startswith("Portal venous")
    assert all(ds.ContrastBolusAgent for ds in series.values())


def test_existing_output_is_refused_unless_overwrite(dataset):
    out, _ = dataset
    with pytest.raises(OutputExistsError):
        write_dataset(out, anatomy="procedural", n_cases=1, seed=5, config=CONFIG, workers=1, progress=False)


def test_cli_writes_the_same_files_in_parallel_and_refuses_overwrite(tmp_path):
    from PancreasAILib.cli.main import main

    out = tmp_path / "cli"
    argv = [
        "synth",
        "--anatomy",
        "procedural",
        "--out",
        str(out),
        "--cases",
        "2",
        "--seed",
        "5",
        "--spacing",
        "2",
        "--slice-thickness",
        "3",
        "--workers",
        "2",
        "--no-progress",
    ]
    # The CLI's default z margin is larger than CONFIG's; compare against a library run with the CLI's config.
    assert main(argv) == 0
    assert (out / "dataset.json").is_file()
    assert main(argv) == ExitCode.OUTPUT_EXISTS
    library = tmp_path / "lib"
    write_dataset(
        library,
        anatomy="procedural",
        n_cases=2,
        seed=5,
        workers=1,
        progress=False,
        config=SynthesisConfig(spacing_mm=2.0, slice_thickness_mm=3.0, work_spacing_mm=2.0),
    )
    for path in sorted((library / "imagesTr").iterdir()) + sorted((library / "labelsTr").iterdir()):
        assert (out / path.parent.name / path.name).read_bytes() == path.read_bytes(), path.name
    empty = tmp_path / "no_maps"
    empty.mkdir()
    assert (
        main(["synth", "--anatomy", str(empty), "--out", str(tmp_path / "x"), "--cases", "1"])
        == ExitCode.BAD_INPUT
    )


def test_on_the_fly_dataset_yields_valid_reproducible_samples():
    ds = SyntheticCTDataset(
        "procedural",
        config=CONFIG,
        seed=3,
        length=2,
        phase_dropout=0.5,
        crop_shape=(16, 48, 48),
        hu_window=(-200.0, 300.0),
    )
    samples = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0))
    assert len(samples) == len(ds) == 2
    for sample in samples:
        image, label, mask = sample["image"], sample["label"], sample["phase_mask"]
        assert image.shape == (3, 16, 48, 48) and image.dtype == torch.float32
        assert label.shape == (16, 48, 48) and set(label.unique().tolist()) <= {0, 1, 2}
        assert (label == 1).any()  # the crop is around the pancreas
        assert mask.any() and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert all(float(image[c].abs().max()) == 0.0 for c in range(3) if not mask[c])
    again = ds.sample(1)
    assert torch.equal(again["image"], samples[1]["image"]) and torch.equal(
        again["label"], samples[1]["label"]
    )
    assert not torch.equal(samples[0]["label"], samples[1]["label"])


def test_a_case_is_remade_with_its_organ_map_and_an_edited_one_is_refused(dataset, tmp_path):
    import shutil

    from PancreasAILib.errors import InputError
    from PancreasAILib.synthesis.anatomy import Organ
    from PancreasAILib.synthesis.dataset import remake_case

    out, _ = dataset
    case = remake_case(out, "PANSYN_0001")
    labels = sitk.GetArrayFromImage(case.labels)
    organs = sitk.GetArrayFromImage(case.organs)
    assert organs.shape == labels.shape
    # the organ map says pancreas (or its duct, or tumour) exactly where the written truth does
    gland = np.isin(organs, [Organ.PANCREAS, Organ.PANCREATIC_DUCT, Organ.TUMOUR])
    assert np.array_equal(gland, labels > 0)
    assert np.array_equal(organs == Organ.TUMOUR, labels == 2)
    assert len(np.unique(organs)) > 10  # a whole abdomen, not only the gland

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    label_path = edited / "labelsTr" / "PANSYN_0001.nii.gz"
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    array[array.shape[0] // 2, 0, 0] = 1
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(label)
    sitk.WriteImage(changed, str(label_path))
    with pytest.raises(InputError, match="did not come out identical"):
        remake_case(edited, "PANSYN_0001")
