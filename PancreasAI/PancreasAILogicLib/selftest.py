"""The module's self-test inside real Slicer: the synthetic demo case, end to end, and a cancelled run.

Runs from the Reload & Test button or `Slicer --python-code "slicer.selfTests['PancreasAI']()"`.
The headless parts (import, export, cancel against real MRML) are also covered by Testing/slicer.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from PancreasAILogicLib import dependencies

RUN_TIMEOUT_S = 900.0


class PancreasAITest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        if not dependencies.plan_install().empty:
            self.delayDisplay(
                "PancreasAI's Python packages are not installed; install them from the module "
                "(Advanced > Install) to run this test."
            )
            return
        self.test_demo_flow()
        self.setUp()
        self.test_cancel_leaves_scene_unchanged()

    def _logic(self):
        from PancreasAI import PancreasAILogic

        logic = PancreasAILogic()
        logic.home = Path(tempfile.mkdtemp(prefix="pancreasai-selftest-"))
        return logic

    def _wait(self, logic, done: dict, timeout_s: float = RUN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while "outcome" not in done:
            slicer.app.processEvents()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                logic.cancel()
                self.fail("The engine did not finish in time.")

    def test_demo_flow(self) -> None:
        self.delayDisplay("Running the synthetic demo case through the engine")
        logic = self._logic()
        done: dict = {}

        def reference(out_dir: Path):
            return slicer.util.loadVolume(
                str(out_dir / "labels.nii.gz"), {"name": "demo reference", "show": False}
            )

        logic.start_demo(
            reference, on_done=lambda outcome, results: done.update(outcome=outcome, results=results)
        )
        self._wait(logic, done)
        self.assertTrue(done["outcome"].ok, done["outcome"].message)
        results = done["results"]
        segmentation = results.segmentation.GetSegmentation()
        self.assertEqual(segmentation.GetSegment("pancreas").GetName(), "Pancreas")
        self.assertEqual(segmentation.GetSegment("tumor").GetName(), "Tumor")
        self.assertIsNotNone(results.lesion_table)

        self.delayDisplay("Exporting with fixed label values and a correction record")
        reference_node = slicer.util.getNode("demo reference")
        path = Path(tempfile.mkdtemp(prefix="pancreasai-selftest-")) / "labels.nii.gz"
        exported = logic.export(
            results.segmentation, reference_node, path, phase_nodes={"venous": reference_node}
        )
        values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())
        self.assertTrue(values <= {0, 1, 2}, values)
        from PancreasAILib.corrections import load_correction_records

        records = load_correction_records(logic.home / "corrections")
        self.assertEqual([r.record_dir for r in records], [exported.record_dir])
        self.delayDisplay("Demo flow passed")

    def test_cancel_leaves_scene_unchanged(self) -> None:
        self.delayDisplay("Cancelling a run")
        logic = self._logic()
        before = slicer.mrmlScene.GetNumberOfNodes()
        done: dict = {}
        logic.start_demo(
            lambda out_dir: None,
            on_progress=lambda event: logic.cancel(),
            on_done=lambda outcome, results: done.update(outcome=outcome, results=results),
        )
        self._wait(logic, done, timeout_s=120.0)
        self.assertEqual(done["outcome"].state.value, "cancelled")
        self.assertIsNone(done["results"])
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel passed")
