"""Volume nodes <-> SimpleITK images with exact geometry (Slicer is RAS, files and the engine are LPS).

Written without sitkUtils (which needs the Slicer application) so the same code runs in Slicer and
against slicer-core in the tests. Reading a node never changes it (no storage node is added).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
GEOMETRY_TOLERANCE = 1e-3  # mm / direction cosine; the engine writes float32-rounded geometry


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_world_ras(node) -> np.ndarray:
    """4x4 IJK -> world RAS of a volume node, its parent linear transforms included."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = _matrix_to_numpy(ijk_to_ras)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise ValueError(
                f"'{node.GetName()}' is under a non-linear transform; harden it first "
                "(Data module: right-click the transform, Harden transform)."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        matrix = _matrix_to_numpy(to_world) @ matrix
    return matrix


def volume_to_image(node) -> sitk.Image:
    """A scalar volume node as a SimpleITK image in LPS, voxels copied, the node untouched."""
    if node is None or node.GetImageData() is None:
        raise ValueError("The volume has no voxels.")
    array = slicer.util.arrayFromVolume(node)  # (k, j, i), a view on the node's voxels
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    matrix = ijk_to_world_ras(node)
    axes = matrix[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"'{node.GetName()}' has a zero voxel spacing.")
    direction_lps = LPS_TO_RAS @ (axes / spacing)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in LPS_TO_RAS @ matrix[:3, 3]])
    image.SetDirection([float(v) for v in direction_lps.ravel()])
    return image


def set_volume_geometry(node, image: sitk.Image) -> None:
    """Give a volume node the geometry of an LPS SimpleITK image."""
    direction_ras = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3)
    node.SetSpacing(*image.GetSpacing())
    node.SetOrigin(*(LPS_TO_RAS @ np.array(image.GetOrigin())))
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(direction_ras[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)


def update_volume_from_image(node, image: sitk.Image) -> None:
    set_volume_geometry(node, image)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))


def same_geometry(node, image: sitk.Image, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
    """True when the image lies exactly on the node's voxel grid (world space)."""
    dims = node.GetImageData().GetDimensions() if node.GetImageData() else (0, 0, 0)
    if tuple(dims) != tuple(image.GetSize()):
        return False
    matrix = ijk_to_world_ras(node)
    expected = np.eye(4)
    direction_ras = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3)
    expected[:3, :3] = direction_ras * np.array(image.GetSpacing())
    expected[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    return bool(np.allclose(matrix, expected, atol=tolerance))


def write_phase_volumes(nodes: Mapping[str, object], folder: Path) -> dict[str, Path]:
    """Write each phase volume as <phase>.nii.gz (LPS, as the engine reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for phase, node in nodes.items():
        path = folder / f"{phase}.nii.gz"
        sitk.WriteImage(volume_to_image(node), str(path), useCompression=True, compressionLevel=1)
        paths[phase] = path
    return paths


def came_from_dicom(node) -> bool:
    """True when Slicer's DICOM module loaded the volume (it records the instance UIDs)."""
    return bool(node is not None and node.GetAttribute("DICOM.instanceUIDs"))
