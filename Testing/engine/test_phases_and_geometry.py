"""Phase identification (tags, attenuation, real DICOM) and physical-space geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ct_phantom, write_phantom_dicom

from PancreasAILib.case import build_phase_set
from PancreasAILib.cli.main import main
from PancreasAILib.geometry import crop_with_margin, paste_into, resample_to_spacing, to_lps_axial
from PancreasAILib.inputs import load_input
from PancreasAILib.phase_id import identify_phases, keyword_scores
from PancreasAILib.phases import Phase


@pytest.mark.parametrize(
    ("text", "phase"),
    [
        ("Art Pancreatic 2.5", "arterial"),
        ("PV 5mm", "venous"),
        ("Portal venous B30f", "venous"),
        ("Late arterial", "arterial"),
        ("Delayed 3 min", "delayed"),
        ("Equilibrium", "delayed"),
        ("Native Abdomen", "unenhanced"),
    ],
)
def test_keywords(text, phase):
    scores, _ = keyword_scores(text)
    assert max(scores, key=scores.get) == phase


@pytest.mark.parametrize("phase", ["arterial", "venous", "delayed"])
def test_attenuation_identifies_untagged_nifti(tmp_path, phase):
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(ct_phantom(phase, seed=4), str(path))
    (evidence,) = identify_phases(load_input(path))
    assert evidence.phase == Phase(phase), evidence.to_report()
    assert any("aorta" in line for line in evidence.evidence)


def test_folder_with_three_tagged_series(tmp_path):
    for k, phase in enumerate(["arterial", "venous", "delayed"]):
        description = {"arterial": "Pancreatic phase", "venous": "Portal venous", "delayed": "Delayed"}[phase]
        write_phantom_dicom(
            tmp_path / "study" / phase, phase, description=description, time_s=36000 + 40 * k, seed=k
        )
    phase_set = build_phase_set({}, [tmp_path / "study"])
    assert phase_set.phases == [Phase.ARTERIAL, Phase.VENOUS, Phase.DELAYED]
    assert phase_set.reference_phase == Phase.VENOUS
    assert all(e.confidence > 0.9 for e in phase_set.evidence.values())


def test_user_override_wins_and_is_recorded(tmp_path):
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(ct_phantom("venous"), str(path))
    phase_set = build_phase_set({Phase.DELAYED: path})
    assert phase_set.phases == [Phase.DELAYED]
    assert phase_set.evidence[Phase.DELAYED].overridden
    assert phase_set.warnings  # it looked venous


def test_inspect_real_portal_venous_dicom(shared_data, capsys):
    code = main(["inspect", str(shared_data / "real_ct" / "portal_venous_dicom"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (series,) = report["series"]
    assert series["identification"]["phase"] == "venous"
    assert any("aorta" in line for line in series["identification"]["evidence"])
    assert series["geometry"]["size"] == [512, 512, 20]
    assert report["case"]["reference"] == "venous"


def test_real_dicom_matches_totalsegmentator_labels_in_physical_space(shared_data):
    """The loader's geometry is right: the TotalSegmentator map (y-flipped header) overlays the CT."""
    (series,) = load_input(shared_data / "real_ct" / "portal_venous_dicom")
    labels = sitk.ReadImage(str(shared_data / "real_ct" / "portal_venous_dicom_totalseg_labels.nii.gz"))
    on_ct = sitk.Resample(labels, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    ct = sitk.GetArrayViewFromImage(series.image)
    lab = sitk.GetArrayViewFromImage(on_ct)
    assert np.median(ct[lab == 7]) > 60  # pancreas is enhancing soft tissue
    assert np.median(ct[lab == 0][::50]) < -500  # mostly air around the body
    flipped_wrongly = lab[:, ::-1, :]
    assert np.median(ct[flipped_wrongly == 7]) < np.median(ct[lab == 7]) - 30


def _oriented(direction) -> sitk.Image:
    image = ct_phantom(size=(80, 70, 20), direction=direction, origin=(10.0, -20.0, 5.0))
    return image


@pytest.mark.parametrize(
    "direction",
    [
        (1, 0, 0, 0, 1, 0, 0, 0, 1),
        (-1, 0, 0, 0, -1, 0, 0, 0, 1),
        (1, 0, 0, 0, 1, 0, 0, 0, -1),
        tuple(sitk.VersorTransform((0, 0, 1), 0.3).GetMatrix()),
    ],
)
def test_crop_paste_and_reorient_keep_physical_positions(direction):
    image = _oriented(direction)
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[30:40, 25:35, 8:12] = 1
    crop = crop_with_margin(image, mask, (10.0, 10.0, 8.0))
    for index in [(0, 0, 0), (crop.GetSize()[0] - 1, 3, 2)]:
        point = crop.TransformIndexToPhysicalPoint(index)
        assert crop[index] == image[image.TransformPhysicalPointToIndex(point)]
    pasted = paste_into(image, crop)
    assert pasted.GetSize() == image.GetSize()
    marked = np.argwhere(sitk.GetArrayViewFromImage(mask))[0][::-1]
    assert pasted[tuple(int(v) for v in marked)] == image[tuple(int(v) for v in marked)]
    lps = to_lps_axial(image)
    point = image.TransformIndexToPhysicalPoint((33, 28, 9))
    assert lps[lps.TransformPhysicalPointToIndex(point)] == image[(33, 28, 9)]
    coarse = resample_to_spacing(image, (4.0, 4.0, 8.0))
    centre_in = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    centre_out = coarse.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in coarse.GetSize()])
    assert np.allclose(centre_in, centre_out, atol=1e-3)
