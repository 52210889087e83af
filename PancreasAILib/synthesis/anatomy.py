"""Anatomy label maps in one canonical organ scheme, and the fixed train / held-out split.

Synthesis starts from an organ label map. Real maps (BTCV as prepared for Learn2Reg, AMOS) use
different label numbers and their headers are not always anatomically right (the BTCV/L2R maps are
left-right mirrored in physical space), so every map is brought to: LPS axes with an identity
direction, the `Organ` numbering, and a sanity check that the spleen is on the patient's left, the
kidneys dorsal to the pancreas and the liver above it. Structures that a scheme lacks (the portal
vein in AMOS, the duodenum and the mesenteric vessels in BTCV) are completed by `completion`.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.errors import InputError

log = logging.getLogger(__name__)


class Organ(IntEnum):
    """Canonical tissue labels. 1-16 come from annotated maps; the rest are generated."""

    BACKGROUND = 0  # not assigned yet (becomes air or body tissue)
    SPLEEN = 1
    KIDNEY_R = 2  # renal cortex after `body` carves the medulla
    KIDNEY_L = 3
    GALLBLADDER = 4
    ESOPHAGUS = 5
    LIVER = 6
    STOMACH = 7  # gastric wall after the lumen is carved
    AORTA = 8
    IVC = 9
    PORTAL_SPLENIC_VEIN = 10  # portal, splenic and superior mesenteric veins
    PANCREAS = 11
    ADRENAL_R = 12
    ADRENAL_L = 13
    DUODENUM = 14  # duodenal wall after the lumen is carved
    BLADDER = 15
    PROSTATE_UTERUS = 16
    ARTERY = 17  # coeliac trunk, SMA, renal arteries (generated)
    AIR = 20  # outside the body
    SKIN = 21
    FAT = 22  # subcutaneous, visceral and retroperitoneal fat
    MUSCLE = 23  # abdominal wall, psoas, paraspinal muscles, diaphragm
    BOWEL = 24  # small and large bowel wall
    LUMEN_FLUID = 25  # fluid in stomach, duodenum and bowel
    LUMEN_AIR = 26  # gas in stomach, duodenum and bowel
    BONE_CORTICAL = 27
    BONE_TRABECULAR = 28
    DISC = 29
    SPINAL_CANAL = 30
    RIB = 31
    LUNG = 32
    HEART = 33
    KIDNEY_MEDULLA = 34
    SMALL_VESSEL = 35  # mesenteric vessels in fat
    HEPATIC_VESSEL = 36  # portal branches and hepatic veins inside the liver
    RENAL_VEIN = 37  # generated
    TUMOUR = 50  # only in fine organ maps that record what was inserted
    PANCREATIC_DUCT = 51


# Source label -> Organ, per scheme.
BTCV_L2R_LABELS: dict[int, Organ] = {
    1: Organ.SPLEEN,
    2: Organ.KIDNEY_R,
    3: Organ.KIDNEY_L,
    4: Organ.GALLBLADDER,
    5: Organ.ESOPHAGUS,
    6: Organ.LIVER,
    7: Organ.STOMACH,
    8: Organ.AORTA,
    9: Organ.IVC,
    10: Organ.PORTAL_SPLENIC_VEIN,
    11: Organ.PANCREAS,
    12: Organ.ADRENAL_R,
    13: Organ.ADRENAL_L,
}
AMOS_LABELS: dict[int, Organ] = {
    1: Organ.SPLEEN,
    2: Organ.KIDNEY_R,
    3: Organ.KIDNEY_L,
    4: Organ.GALLBLADDER,
    5: Organ.ESOPHAGUS,
    6: Organ.LIVER,
    7: Organ.STOMACH,
    8: Organ.AORTA,
    9: Organ.IVC,
    10: Organ.PANCREAS,
    11: Organ.ADRENAL_R,
    12: Organ.ADRENAL_L,
    13: Organ.DUODENUM,
    14: Organ.BLADDER,
    15: Organ.PROSTATE_UTERUS,
}
SCHEMES: dict[str, dict[int, Organ]] = {"btcv_l2r": BTCV_L2R_LABELS, "amos": AMOS_LABELS}

# The fixed split. Held-out maps are never used in training; evaluation on them measures
# generalisation to unseen anatomy.
ANATOMY_SPLIT: dict[str, tuple[str, ...]] = {
    "train": tuple(f"btcv_l2r/{i:04d}" for i in (*range(1, 11), *range(21, 25))),
    "heldout": (*(f"btcv_l2r/{i:04d}" for i in range(25, 31)), "amos/amos_0013"),
}


@dataclass
class Anatomy:
    """One organ label map (uint8, `Organ` values, LPS, identity direction) and what was done to it."""

    labels: sitk.Image
    name: str
    source: str  # "btcv_l2r", "amos" or "procedural"
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def array(self) -> np.ndarray:
        """The label array (z, y, x); read-only, shared by all cases made from this map."""
        arr = sitk.GetArrayFromImage(self.labels)
        arr.setflags(write=False)
        return arr

    def points_mm(self, organ: Organ | None = None, step: int = 1) -> np.ndarray:
        """Physical (x, y, z) LPS points of an organ's voxels (all labelled voxels when None)."""
        mask = self.array > 0 if organ is None else self.array == organ
        idx = np.argwhere(mask[::step, ::step, ::step]).astype(np.float64) * step
        return index_to_mm(self.labels, idx)

    def has(self, organ: Organ) -> bool:
        return bool(np.any(self.array == organ))


def index_to_mm(image: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """(z, y, x) indices of an identity-direction image -> (x, y, z) LPS millimetres."""
    origin = np.asarray(image.GetOrigin())
    spacing = np.asarray(image.GetSpacing())
    return origin + zyx[:, ::-1] * spacing


def detect_scheme(path: Path, max_label: int) -> str:
    """Which label scheme a file uses: by name first, then by the highest label."""
    text = str(path).lower()
    if "amos" in text:
        return "amos"
    if "btcv" in text or "l2r" in text:
        return "btcv_l2r"
    return "amos" if max_label > 13 else "btcv_l2r"


def _to_identity_lps(image: sitk.Image) -> sitk.Image:
    """Reorient to LPS axes (a permutation/flip, exact for axis-aligned maps; resampled otherwise)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if np.allclose(np.abs(direction), np.round(np.abs(direction)), atol=1e-3):
        return sitk.DICOMOrient(image, "LPS")
    log.warning("Anatomy map is oblique; resampling it onto LPS axes with nearest neighbour.")
    corners = [
        image.TransformIndexToPhysicalPoint([i * (s - 1) for i, s in zip(c, image.GetSize(), strict=True)])
        for c in np.ndindex(2, 2, 2)
    ]
    lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
    spacing = [min(image.GetSpacing())] * 3
    size = [int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing, strict=True)]
    ref = sitk.Image(size, image.GetPixelID())
    ref.SetOrigin(tuple(lo))
    ref.SetSpacing(spacing)
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def _centroid(array: np.ndarray, organ: Organ) -> np.ndarray | None:
    idx = np.argwhere(array == organ)
    return idx.mean(axis=0) if len(idx) else None  # (z, y, x) index


def canonicalise(array: np.ndarray, notes: list[str]) -> np.ndarray:
    """Mirror axes whose anatomy contradicts LPS (spleen must be left of the liver, and so on).

    In an identity-direction LPS array, +x is the patient's left, +y posterior, +z superior.
    """
    checks = (  # axis (array order z, y, x), organ that must have the larger index, the smaller one
        (2, Organ.SPLEEN, Organ.LIVER, "left-right"),
        (1, Organ.KIDNEY_L, Organ.PANCREAS, "anterior-posterior"),
        (0, Organ.LIVER, Organ.PANCREAS, "superior-inferior"),
    )
    for axis, larger, smaller, name in checks:
        a, b = _centroid(array, larger), _centroid(array, smaller)
        if a is None or b is None:
            continue
        if a[axis] < b[axis]:
            array = np.flip(array, axis=axis)
            notes.append(f"mirrored {name}: the header contradicted the anatomy")
    return np.ascontiguousarray(array)


def load_anatomy(path: Path | str, scheme: str | None = None, complete: bool = True) -> Anatomy:
    """Read a label map, map it to `Organ`, fix its orientation and (optionally) complete it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"The anatomy label map {path} does not exist.",
            "Pass a NIfTI/NRRD/MHA organ label map (e.g. from ../shared/data/anatomy).",
        )
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            f"The anatomy label map {path} cannot be read ({error}).",
            "Pass a readable NIfTI/NRRD/MHA label image.",
        ) from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} is not a 3D scalar label map.", "Pass a 3D organ label image.")
    image = _to_identity_lps(sitk.Cast(image, sitk.sitkInt32))
    source = sitk.GetArrayFromImage(image)
    scheme = scheme or detect_scheme(path, int(source.max()))
    if scheme not in SCHEMES:
        raise InputError(f"Unknown anatomy label scheme {scheme!r}.", f"Use one of {sorted(SCHEMES)}.")
    lut = np.zeros(max(256, int(source.max()) + 1), dtype=np.uint8)
    for src, organ in SCHEMES[scheme].items():
        lut[src] = organ
    array = lut[np.clip(source, 0, len(lut) - 1)]
    if not np.any(array == Organ.PANCREAS):
        raise InputError(
            f"The anatomy label map {path} has no pancreas label.",
            "Use a map with a pancreas label (BTCV label 11 or AMOS label 10).",
        )
    notes: list[str] = []
    array = canonicalise(array, notes)
    name = _anatomy_name(path, scheme)
    anatomy = Anatomy(labels=array_to_image(array, image), name=name, source=scheme, notes=notes)
    if complete:
        from PancreasAILib.synthesis.completion import complete_anatomy

        anatomy = complete_anatomy(anatomy)
    return anatomy


@functools.lru_cache(maxsize=32)
def load_anatomy_cached(path: str) -> Anatomy:
    """`load_anatomy` once per process (workers of the dataset writer and the on-the-fly dataset)."""
    return load_anatomy(path)


def array_to_image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    image.SetOrigin(like.GetOrigin())
    image.SetSpacing(like.GetSpacing())
    image.SetDirection(like.GetDirection())
    return image


def anatomy_name(path: Path | str) -> str:
    """The name a map goes by in the split, in model cards and in cache metadata (e.g. btcv_l2r/0023)."""
    return _anatomy_name(Path(path), detect_scheme(Path(path), 0))


def _anatomy_name(path: Path, scheme: str) -> str:
    stem = re.sub(r"(_label)?\.(nii\.gz|nii|nrrd|mha|mhd)$", "", path.name)
    return f"{path.parent.name}/{stem}" if path.parent.name in SCHEMES else f"{scheme}/{stem}"


LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def list_anatomy_maps(root: Path | str) -> list[Path]:
    """All label maps under `root` (recursively), sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(
            f"The anatomy folder {root} does not exist.",
            "Pass --anatomy ../shared/data/anatomy (or a folder of label maps), or 'procedural'.",
        )
    maps = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(LABEL_SUFFIXES))
    if not maps:
        raise InputError(
            f"The anatomy folder {root} holds no label maps (.nii.gz, .nii, .nrrd, .mha).",
            "Point --anatomy at a folder of organ label maps, or use --anatomy procedural.",
        )
    return maps


def anatomy_split(root: Path | str) -> dict[str, list[Path]]:
    """The fixed split resolved under `root`: {"train": [...], "heldout": [...], "other": [...]}.

    Maps that are not named in `ANATOMY_SPLIT` go to "other" (never used by default).
    """
    maps = list_anatomy_maps(root)
    keyed = {anatomy_name(p): p for p in maps}
    split: dict[str, list[Path]] = {"train": [], "heldout": [], "other": []}
    named = set()
    for part, names in ANATOMY_SPLIT.items():
        for name in names:
            if name in keyed:
                split[part].append(keyed[name])
                named.add(name)
    split["other"] = [p for n, p in keyed.items() if n not in named]
    return split
