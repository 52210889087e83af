"""The label contract every stage and the Slicer module rely on: 0 background, 1 pancreas, 2 tumour.

One table holds each label's name, colour and SNOMED CT terminology, so that the NIfTI label map,
the Slicer .seg.nrrd and the DICOM SEG all describe the same segments the same way.

Terminology choices:
- Pancreas: category "Anatomical Structure" (SCT 123037004), type "Pancreas" (SCT 15776009), the
  codes of Slicer's General Anatomy list and of TotalSegmentator's pancreas.
- Tumour: category "Morphologically Altered Structure" (SCT 49755003), type "Mass" (SCT 4147007),
  anatomic region "Pancreas" (SCT 15776009). "Mass" is the tumour entry of Slicer's General Anatomy
  list (used e.g. for liver and kidney tumours) and of DICOM CID 7159; it does not claim histology
  or malignancy ("Neoplasm, Primary", SCT 86049000, would), which an image model cannot establish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

BACKGROUND = 0
PANCREAS = 1
TUMOR = 2


@dataclass(frozen=True)
class Code:
    """A coded concept (coding scheme, code value, code meaning), e.g. SCT 15776009 "Pancreas"."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class LabelInfo:
    """One segment of the contract: its voxel value, display name, colour and terminology."""

    value: int
    name: str
    segment_id: str  # stable ID of the segment in .seg.nrrd files (used by the Slicer module)
    color: tuple[float, float, float]  # RGB in 0..1
    category: Code
    type: Code
    anatomic_region: Code | None = None
    aliases: tuple[str, ...] = ()  # other segment names accepted when reading corrected files

    @property
    def color_uint8(self) -> tuple[int, int, int]:
        return tuple(round(255 * c) for c in self.color)


SCT_PANCREAS = Code("SCT", "15776009", "Pancreas")

LABELS: tuple[LabelInfo, ...] = (
    LabelInfo(
        value=PANCREAS,
        name="Pancreas",
        segment_id="pancreas",
        color=(249 / 255, 180 / 255, 111 / 255),  # Slicer's pancreas colour
        category=Code("SCT", "123037004", "Anatomical Structure"),
        type=SCT_PANCREAS,
        aliases=("pancreas", "pancreatic parenchyma", "parenchyma"),
    ),
    LabelInfo(
        value=TUMOR,
        name="Tumor",
        segment_id="tumor",
        color=(0.90, 0.10, 0.10),
        category=Code("SCT", "49755003", "Morphologically Altered Structure"),
        type=Code("SCT", "4147007", "Mass"),
        anatomic_region=SCT_PANCREAS,
        aliases=(
            "tumor",
            "tumour",
            "mass",
            "lesion",
            "pdac",
            "neoplasm",
            "pancreatic tumor",
            "pancreatic tumour",
        ),
    ),
)

LABEL_VALUES: frozenset[int] = frozenset({BACKGROUND} | {label.value for label in LABELS})

# Codes that identify our segments in files written by other tools (by segmented property type).
TYPE_CODE_TO_LABEL: dict[str, int] = {
    "15776009": PANCREAS,  # Pancreas
    "4147007": TUMOR,  # Mass
    "86049000": TUMOR,  # Neoplasm, Primary
    "108369006": TUMOR,  # Neoplasm
    "52988006": TUMOR,  # Lesion
}


def label_info(value: int) -> LabelInfo:
    for label in LABELS:
        if label.value == value:
            return label
    raise KeyError(f"No label with value {value}; the contract is 1 pancreas, 2 tumour.")


def label_for_name(name: str) -> int | None:
    """The label value a segment name stands for (case-insensitive), or None when unknown."""
    key = name.strip().lower()
    for label in LABELS:
        if key == label.name.lower() or key in label.aliases:
            return label.value
    return None


def check_label_map(labels: sitk.Image) -> np.ndarray:
    """Validate a label map and return its voxels as a uint8 (k, j, i) array.

    Raises ValueError when the image is not 3D scalar or holds values outside {0, 1, 2}.
    """
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"A label map must be a 3D scalar image; got {labels.GetDimension()}D with "
            f"{labels.GetNumberOfComponentsPerPixel()} component(s)."
        )
    array = sitk.GetArrayViewFromImage(labels)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError("The label map holds NaN or infinite values; labels must be 0, 1 or 2.")
    values = np.unique(array)
    unexpected = [v for v in values.tolist() if v not in LABEL_VALUES]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:8])
        raise ValueError(
            f"The label map holds values {shown} outside the contract "
            "(0 background, 1 pancreas, 2 tumour). Map other labels before export."
        )
    return array.astype(np.uint8)


def as_uint8_labels(labels: sitk.Image) -> sitk.Image:
    """The label map as uint8 with its geometry kept exactly (validated first)."""
    array = check_label_map(labels)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    return out


def write_label_map(path: Path, labels: sitk.Image) -> Path:
    """Write the label map as a compressed uint8 NIfTI (or any format the suffix names)."""
    path = Path(path)
    sitk.WriteImage(as_uint8_labels(labels), str(path), useCompression=True)
    return path
