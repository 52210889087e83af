"""Every named bad input: a clear message with the problem and the fix, a non-zero exit, no outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import ct_phantom, write_phantom_dicom

from PancreasAILib.cli.main import main
from PancreasAILib.errors import ExitCode


def run_align(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    out = tmp_path / "out"
    code = main(["align", *args, "--out", str(out), "--progress", "none"])
    err = capsys.readouterr().err
    assert not out.exists(), "a failed run must leave no output folder"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no hidden partial folder"
    return code, err


def expect(code: int, err: str, status: ExitCode, *words: str) -> None:
    assert code == status, err
    assert "fix:" in err
    for word in words:
        assert word.lower() in err.lower(), err


def write_nifti(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_missing_path(tmp_path, capsys):
    expect(
        *run_align(tmp_path, capsys, "--venous", str(tmp_path / "nowhere")),
        ExitCode.BAD_INPUT,
        "does not exist",
    )


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    expect(*run_align(tmp_path, capsys, str(tmp_path / "empty")), ExitCode.BAD_INPUT, "is empty")


def test_non_image_file(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    expect(*run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.BAD_INPUT, "neither")


def test_2d_image(tmp_path, capsys):
    slice_2d = sitk.Extract(ct_phantom(), (120, 100, 0), (0, 0, 5))
    path = write_nifti(tmp_path / "slice.nii.gz", slice_2d)
    expect(*run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.BAD_INPUT, "2D image")


def test_single_dicom_slice_is_2d(tmp_path, capsys):
    files = write_phantom_dicom(tmp_path / "dicom")
    for extra in files[1:]:
        extra.unlink()
    expect(*run_align(tmp_path, capsys, str(tmp_path / "dicom")), ExitCode.BAD_INPUT, "2D image")


def test_rgb_image(tmp_path, capsys):
    grey = sitk.Cast(sitk.RescaleIntensity(ct_phantom(), 0, 255), sitk.sitkUInt8)
    rgb = sitk.Compose(grey, grey, grey)
    path = write_nifti(tmp_path / "rgb.mha", rgb)
    expect(*run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.BAD_INPUT, "RGB")


def test_non_ct_modality(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "mr", modality="MR")
    expect(*run_align(tmp_path, capsys, str(tmp_path / "mr")), ExitCode.BAD_INPUT, "no CT volume", "MR")


def test_two_patients(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "a", "arterial", patient_id="PAT1")
    write_phantom_dicom(tmp_path / "v", "venous", patient_id="PAT2", seed=3)
    code, err = run_align(
        tmp_path, capsys, "--arterial", str(tmp_path / "a"), "--venous", str(tmp_path / "v")
    )
    expect(code, err, ExitCode.INCONSISTENT_INPUT, "different patients", "--force")
    assert "PAT1" not in err and "PAT2" not in err, "identifiers are PHI: never printed"


def test_two_studies(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "a", "arterial", study_uid="1.2.3.4.1")
    write_phantom_dicom(tmp_path / "v", "venous", study_uid="1.2.3.4.2", seed=3)
    code, err = run_align(
        tmp_path, capsys, "--arterial", str(tmp_path / "a"), "--venous", str(tmp_path / "v")
    )
    expect(code, err, ExitCode.INCONSISTENT_INPUT, "different studies")


def test_two_patients_in_one_folder(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "mixed" / "a", "arterial", patient_id="PAT1")
    write_phantom_dicom(tmp_path / "mixed" / "v", "venous", patient_id="PAT2", seed=3)
    expect(
        *run_align(tmp_path, capsys, str(tmp_path / "mixed")),
        ExitCode.INCONSISTENT_INPUT,
        "different patients",
    )


def test_corrupt_dicom_slice(tmp_path, capsys):
    files = write_phantom_dicom(tmp_path / "dicom")
    data = files[10].read_bytes()
    files[10].write_bytes(data[: len(data) - 5000])  # pixel data cut short
    expect(*run_align(tmp_path, capsys, str(tmp_path / "dicom")), ExitCode.BAD_INPUT, "corrupt")


def test_missing_slices(tmp_path, capsys):
    files = write_phantom_dicom(tmp_path / "dicom")
    files[12].unlink()
    files[13].unlink()
    expect(*run_align(tmp_path, capsys, str(tmp_path / "dicom")), ExitCode.BAD_INPUT, "missing slices")


def test_gantry_tilt(tmp_path, capsys):
    files = write_phantom_dicom(tmp_path / "dicom", gantry_tilt_deg=15.0)
    for k, path in enumerate(files):  # tilted acquisition: positions sheared along y
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * 4.0 * np.tan(np.radians(15.0)), z]
        ds.save_as(path)
    expect(*run_align(tmp_path, capsys, str(tmp_path / "dicom")), ExitCode.BAD_INPUT, "gantry tilt")


@pytest.mark.parametrize("name", ["nan.mha", "nan.nii.gz", "nan.nii"])
def test_nan_voxels(tmp_path, capsys, name):
    # ITK's NIfTI reader turns NaN into 0 silently: the file itself must be checked
    image = ct_phantom()
    array = sitk.GetArrayFromImage(image)
    array[5, 10:20, 10:20] = np.nan
    array[6, 0, 0] = np.inf
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    path = write_nifti(tmp_path / name, bad)
    expect(*run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.BAD_INPUT, "101 voxels that are NaN")


def test_tiny_volume(tmp_path, capsys):
    path = write_nifti(tmp_path / "tiny.nii.gz", ct_phantom(size=(24, 24, 6)))
    expect(*run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.BAD_INPUT, "too small")


def test_oversized_volume_is_refused_from_its_header(tmp_path, capsys):
    # A detached NRRD header claiming 2048x2048x2000 int16 (16 GB); the data file is never read.
    (tmp_path / "huge.raw").write_bytes(b"\0" * 16)
    header = tmp_path / "huge.nhdr"
    header.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 2048 2048 2000\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,0.5)\n"
        "encoding: raw\nendian: little\nspace origin: (0,0,0)\ndata file: huge.raw\n\n"
    )
    expect(*run_align(tmp_path, capsys, "--venous", str(header)), ExitCode.TOO_LARGE, "memory guard", "GB")


def test_memory_guard_is_configurable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PANCREASAI_MAX_MEMORY_GB", "0.001")
    path = write_nifti(tmp_path / "v.nii.gz", ct_phantom())
    expect(
        *run_align(tmp_path, capsys, "--venous", str(path)), ExitCode.TOO_LARGE, "PANCREASAI_MAX_MEMORY_GB"
    )


def test_two_series_claiming_the_same_phase(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "study" / "s1", "venous", description="Portal venous 2.5", time_s=36000)
    write_phantom_dicom(tmp_path / "study" / "s2", "venous", description="PV 5mm", time_s=36010, seed=5)
    expect(
        *run_align(tmp_path, capsys, str(tmp_path / "study")),
        ExitCode.INCONSISTENT_INPUT,
        "Two series claim the venous phase",
    )


def test_existing_output_folder_is_not_overwritten(tmp_path, capsys):
    path = write_nifti(tmp_path / "v.nii.gz", ct_phantom())
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code = main(["align", "--venous", str(path), "--out", str(out), "--progress", "none"])
    assert code == ExitCode.OUTPUT_EXISTS
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


def test_force_allows_two_studies_with_a_warning(tmp_path, capsys):
    write_phantom_dicom(tmp_path / "a", "arterial", study_uid="1.2.3.4.1")
    write_phantom_dicom(tmp_path / "v", "venous", study_uid="1.2.3.4.2", seed=3)
    out = tmp_path / "out"
    code = main(
        [
            "align",
            "--arterial",
            str(tmp_path / "a"),
            "--venous",
            str(tmp_path / "v"),
            "--force",
            "--out",
            str(out),
            "--progress",
            "none",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["alignment.json", "arterial.nii.gz", "venous.nii.gz"]
    shutil.rmtree(out)
