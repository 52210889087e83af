"""Fixtures for the Slicer-side tests: a real MRML scene from PyPI's slicer-core, set up as Slicer does.

These tests run in their own environment (.venv-slicer, `make test-slicer`) because slicer-core pins
its own vtk. Tests that need MRML skip with a clear reason where slicer-core is not installed; the
runner, .ui and static-name tests need only the standard library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "PancreasAI"
FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
for path in (str(MODULE_DIR), str(REPO_ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

SLICER_MISSING_REASON = os.environ.get(
    "PANCREASAI_SLICER_UNAVAILABLE",
    "slicer-core is not installed in this Python; run `make test-slicer`, which creates .venv-slicer with it",
)


@pytest.fixture(scope="session")
def slicer_module():
    """`import slicer` from slicer-core, with the segmentation converters Slicer registers at startup."""
    slicer = pytest.importorskip("slicer", reason=SLICER_MISSING_REASON)
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip(SLICER_MISSING_REASON)
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for name in (
        "vtkBinaryLabelmapToClosedSurfaceConversionRule",
        "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    ):
        if name not in registered:
            factory.RegisterConverterRule(getattr(slicer, name)())
    return slicer


@pytest.fixture
def scene(slicer_module):
    """A fresh scene with the three slice views' nodes that Slicer's layout would create."""
    scene = slicer_module.vtkMRMLScene()
    slicer_module.mrmlScene = scene  # slicer.util helpers look here, as in the application
    for name in ("Red", "Yellow", "Green"):
        slice_node = slicer_module.vtkMRMLSliceNode()
        slice_node.SetName(name)
        slice_node.SetLayoutName(name)
        slice_node.SetOrientation({"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}[name])
        scene.AddNode(slice_node)
        composite = slicer_module.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        scene.AddNode(composite)
    yield scene
    scene.Clear(True)


@pytest.fixture
def fake_engine_prefix() -> list[str]:
    return [sys.executable, str(FAKE_ENGINE)]
