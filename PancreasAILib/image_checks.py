"""Checks every input image passes before any work: 3D, scalar, finite, plausible size, memory guard.

Each failure raises an `InputError`/`TooLargeError` that names the problem and the fix, so a bad
input stops the run before anything is written.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasAILib.errors import InputError, TooLargeError

# Smallest volume a pancreas search makes sense on: 32x32 in-plane and 8 slices, and 60 mm in-plane.
MIN_VOXELS_PER_AXIS = (32, 32, 8)
MIN_INPLANE_EXTENT_MM = 60.0
DEFAULT_MAX_MEMORY_GB = 4.0
# Working copies one phase needs at peak (stored int16 + float32 HU + resampled float32 + masks).
BYTES_PER_VOXEL_AT_PEAK = 14


def max_memory_gb() -> float:
    """The memory guard: PANCREASAI_MAX_MEMORY_GB or 4 GB (the design's CPU target)."""
    value = os.environ.get("PANCREASAI_MAX_MEMORY_GB")
    if value is None:
        return DEFAULT_MAX_MEMORY_GB
    try:
        return float(value)
    except ValueError as error:
        raise InputError(
            f"PANCREASAI_MAX_MEMORY_GB is {value!r}, not a number.",
            "Set it to a number of gigabytes, e.g. PANCREASAI_MAX_MEMORY_GB=8, or unset it.",
        ) from error


def check_memory(size_xyz: tuple[int, ...], source: str, num_phases: int = 1) -> None:
    """Refuse, before reading pixels, a volume whose processing would exceed the memory guard."""
    voxels = int(np.prod(size_xyz, dtype=np.int64))
    needed_gb = voxels * BYTES_PER_VOXEL_AT_PEAK * max(num_phases, 1) / 1e9
    limit = max_memory_gb()
    if needed_gb > limit:
        raise TooLargeError(
            f"{source} has {voxels:,} voxels ({'x'.join(map(str, size_xyz))}); processing it would need "
            f"about {needed_gb:.1f} GB, above the {limit:.1f} GB memory guard.",
            "Crop or downsample the series to the abdomen (e.g. 512x512 and at most ~600 slices), "
            "or raise the guard with PANCREASAI_MAX_MEMORY_GB if this machine has the memory.",
        )


def check_geometry(size_xyz: tuple[int, ...], spacing: tuple[float, ...], source: str) -> None:
    """Reject 2D images and volumes too small to hold a pancreas."""
    if len(size_xyz) != 3 or (len(size_xyz) == 3 and size_xyz[2] == 1):
        raise InputError(
            f"{source} is a 2D image ({'x'.join(map(str, size_xyz))}); PancreasAI needs a 3D CT volume.",
            "Give the whole series (the DICOM folder or a 3D NIfTI/NRRD/MHA file), not a single slice.",
        )
    too_few = any(n < m for n, m in zip(size_xyz, MIN_VOXELS_PER_AXIS, strict=True))
    extent = min(size_xyz[0] * spacing[0], size_xyz[1] * spacing[1])
    if too_few or extent < MIN_INPLANE_EXTENT_MM:
        raise InputError(
            f"{source} is too small to search for the pancreas: {'x'.join(map(str, size_xyz))} voxels, "
            f"{extent:.0f} mm in-plane (need at least "
            f"{'x'.join(map(str, MIN_VOXELS_PER_AXIS))} voxels and {MIN_INPLANE_EXTENT_MM:.0f} mm).",
            "Give the full abdominal series rather than a crop or a thumbnail.",
        )


def check_pixels(image: sitk.Image, source: str, nonfinite_in_file: int = 0) -> None:
    """Reject multi-component (RGB) and non-finite images (`nonfinite_in_file`: counted before ITK read it)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel (a colour/RGB or "
            "vector image), not CT attenuation values.",
            "Export the original greyscale CT series (Hounsfield units), not a screenshot or colour rendering.",
        )
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        bad = max(int(np.count_nonzero(~np.isfinite(array))), nonfinite_in_file)
        if bad:
            raise InputError(
                f"{source} contains {bad:,} voxels that are NaN or infinite.",
                "Re-export the series from the scanner or PACS; if it was processed, fix the step that "
                "produced non-finite values (e.g. a division) before running PancreasAI.",
            )


def check_image_file_header(path: Path) -> sitk.ImageFileReader:
    """Read only the header of an image file and run the size and memory checks on it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(
            f"{path} is not an image PancreasAI can read.",
            "Give a DICOM series folder or a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr) or MetaImage "
            "(.mha/.mhd) file.",
        ) from error
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"{path} has {reader.GetNumberOfComponents()} components per voxel (a colour/RGB or vector "
            "image), not CT attenuation values.",
            "Export the original greyscale CT series (Hounsfield units), not a screenshot or colour rendering.",
        )
    check_geometry(tuple(size), tuple(reader.GetSpacing()), str(path))
    check_memory(tuple(size), str(path))
    return reader


# NIfTI float datatypes (code -> numpy dtype): ITK's NIfTI reader turns NaN into 0 on reading, so
# non-finite voxels must be counted in the file itself.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def nifti_nonfinite_voxels(path: Path) -> int:
    """Count NaN/inf voxels stored in a float NIfTI-1/-2 file (0 for integer data or other formats)."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return 0
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(540)
        for endian in ("<", ">"):
            size = struct.unpack(endian + "i", head[:4])[0]
            if size in (348, 540):
                break
        else:
            return 0  # not a NIfTI header this parser knows; ITK has read it, leave it be
        if size == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype = struct.unpack(endian + "h", head[70:72])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
        else:
            datatype = struct.unpack(endian + "h", head[12:14])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
        if datatype not in _NIFTI_FLOATS:
            return 0
        count = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 1)]]))
        handle.seek(offset)
        dtype = np.dtype(endian + _NIFTI_FLOATS[datatype])
        bad, chunk = 0, 1 << 22
        while count > 0:  # in chunks: a 512x512x300 float volume is 300 MB
            block = np.frombuffer(handle.read(min(count, chunk) * dtype.itemsize), dtype)
            if block.size == 0:
                break
            bad += int(np.count_nonzero(~np.isfinite(block)))
            count -= block.size
    return bad
