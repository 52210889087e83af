"""PancreasAI: pancreatic tumour segmentation on multi-phase CT, as a 3D Slicer scripted module.

GUI and MRML glue only. The engine (PancreasAILib) runs in a separate process, so the GUI never
freezes and an engine crash cannot take Slicer down. Research use only, not for clinical use.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from PancreasAILogicLib import dependencies, engine
from PancreasAILogicLib.logic import PancreasAICore, default_home
from PancreasAILogicLib.qt_runner import QProcessRunner
from PancreasAILogicLib.results import HEATMAP_ANCHORS, ImportedResults, report_notes
from PancreasAILogicLib.runner import ProgressEvent, RunOutcome
from PancreasAILogicLib.scene_io import came_from_dicom
from PancreasAILogicLib.selftest import PancreasAITest  # noqa: F401  (Slicer looks it up by this name)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICE_CHOICES = ("auto", "cuda", "cpu")  # in the order of deviceComboBox's items
SETTINGS_KEY = "PancreasAI"


class PancreasAI(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PancreasAI")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["PancreasAI developers"]
        self.parent.helpText = _(
            "Segment the pancreas and pancreatic tumours on arterial, venous and delayed contrast CT, "
            "with a PDAC likelihood, a lesion list and an anomaly heatmap; correct the result in the "
            "Segment Editor and export it. Research use only, not for clinical use."
        )
        self.parent.acknowledgementText = _(
            "Synthetic training data are made from public anatomy label maps."
        )


@parameterNodeWrapper
class PancreasAIParameterNode:
    arterialVolume: vtkMRMLScalarVolumeNode
    venousVolume: vtkMRMLScalarVolumeNode
    delayedVolume: vtkMRMLScalarVolumeNode
    computeHeatmap: bool = True
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    segmentation: vtkMRMLSegmentationNode
    heatmap: vtkMRMLScalarVolumeNode
    lesionTable: vtkMRMLTableNode


class PancreasAILogic(ScriptedLoadableModuleLogic, PancreasAICore):
    """Slicer's logic: the Qt-free core with a QProcess runner and the colour legend of the Colors module."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        PancreasAICore.__init__(
            self,
            slicer.mrmlScene,
            runner_factory=QProcessRunner,
            python=engine.python_executable(inside_slicer=True),
            home=_settings_path("home", default_home()),
            color_logic=slicer.modules.colors.logic(),
        )

    def getParameterNode(self) -> PancreasAIParameterNode:
        return PancreasAIParameterNode(super().getParameterNode())


def _settings_path(key: str, default: Path) -> Path:
    value = qt.QSettings().value(f"{SETTINGS_KEY}/{key}")
    return Path(value) if value else default


class PancreasAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: PancreasAILogic | None = None
        self._parameterNode: PancreasAIParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._results: ImportedResults | None = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PancreasAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PancreasAILogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.identifyPhasesButton.connect("clicked(bool)", self.onIdentifyPhases)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.lesionTableWidget.connect("cellClicked(int,int)", self.onLesionClicked)
        self.ui.showHeatmapCheckBox.connect("toggled(bool)", self.updateHeatmapDisplay)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.updateHeatmapDisplay)
        self.ui.heatmapThresholdSlider.connect("valueChanged(double)", self.updateHeatmapDisplay)
        self.ui.correctButton.connect("clicked(bool)", self.onCorrect)
        self.ui.installButton.connect("clicked(bool)", self.ensureDependencies)
        self.ui.demoButton.connect("clicked(bool)", self.onDemo)
        self.ui.correctionsFolderPathLineEdit.currentPath = str(self.logic.home / "corrections")
        self.ui.correctionsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onCorrectionsFolder)
        menu = qt.QMenu(self.ui.exportButton)
        menu.addAction(_("DICOM SEG into the DICOM database"), lambda: self.onExport("dicom"))
        menu.addAction(_("NIfTI label map (.nii.gz)…"), lambda: self.onExport(".nii.gz"))
        menu.addAction(_("Slicer segmentation (.seg.nrrd)…"), lambda: self.onExport(".seg.nrrd"))
        self.ui.exportButton.setMenu(menu)
        self.ui.heatmapLegendLabel.setPixmap(self._legendPixmap())
        self.ui.lesionTableWidget.verticalHeader().hide()
        self.ui.lesionTableWidget.horizontalHeader().setStretchLastSection(True)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None and self.logic.running:
            self.logic.cancel()
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: PancreasAIParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        has_input = bool(p and (p.arterialVolume or p.venousVolume or p.delayedVolume))
        running = bool(self.logic and self.logic.running)
        self.ui.segmentButton.enabled = has_input or running
        self.ui.segmentButton.text = _("Stop") if running else _("Segment tumor")
        has_result = bool(p and p.segmentation)
        self.ui.correctButton.enabled = has_result and not running
        self.ui.exportButton.enabled = has_result and not running

    # --- phases ---------------------------------------------------------------------------------
    def onIdentifyPhases(self) -> None:
        if not self.ensureDependencies():
            return
        volumes = [
            n
            for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            if n.GetAttribute("PancreasAI.Role") is None and not n.IsA("vtkMRMLLabelMapVolumeNode")
        ]  # never our own heatmaps, nor label maps
        if not volumes:
            self.ui.phaseStatusLabel.text = _("Load CT volumes first (DICOM or NIfTI/NRRD).")
            return
        self.ui.phaseStatusLabel.text = _("Identifying phases…")
        self.logic.identify_phases(volumes, self._onPhasesIdentified)

    def _onPhasesIdentified(self, found: dict, message: str) -> None:
        self.ui.phaseStatusLabel.text = message
        for phase, node in found.items():
            setattr(self._parameterNode, f"{phase}Volume", node)

    def phaseNodes(self) -> dict:
        p = self._parameterNode
        return {
            phase: getattr(p, f"{phase}Volume") for phase in engine.PHASES if getattr(p, f"{phase}Volume")
        }

    # --- run --------------------------------------------------------------------------------------
    def ensureDependencies(self) -> bool:
        wheels = self.ui.wheelFolderPathLineEdit.currentPath
        plan = dependencies.plan_install(Path(wheels) if wheels else None)
        try:
            if not dependencies.install_in_slicer(
                plan, lambda text: slicer.util.confirmOkCancelDisplay(text)
            ):
                self.ui.stageLabel.text = _("Python packages are missing; nothing was run.")
                return False
        except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
            slicer.util.errorDisplay(_("Installing the Python packages failed: {error}").format(error=err))
            return False
        return True

    def onSegmentButton(self) -> None:
        if self.logic.running:
            self.ui.stageLabel.text = _("Stopping…")
            self.logic.cancel()
            return
        if not self.ensureDependencies():
            return
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        device = DEVICE_CHOICES[max(0, self.ui.deviceComboBox.currentIndex)]
        pancreasModel = self.ui.pancreasModelPathLineEdit.currentPath.strip()
        try:
            self.logic.start_segmentation(
                self.phaseNodes(),
                device=device,
                heatmap=self._parameterNode.computeHeatmap,
                stage1_model=Path(pancreasModel) if pancreasModel else None,
                on_progress=self._onProgress,
                on_log=self._onLog,
                on_done=self._onDone,
            )
        except (ValueError, OSError) as err:
            slicer.util.errorDisplay(str(err))
            return
        self.ui.stageLabel.text = _("Starting the engine…")
        self.updateButtons()

    def onDemo(self) -> None:
        if self.logic.running or not self.ensureDependencies():
            return
        self.logic.start_demo(
            _loadDemoReference, on_progress=self._onProgress, on_log=self._onLog, on_done=self._onDone
        )
        self.updateButtons()

    def _onProgress(self, event: ProgressEvent) -> None:
        self.ui.progressBar.value = round(1000 * event.overall)
        self.ui.stageLabel.text = f"{event.title}: {event.message}" if event.message else event.title

    def _onLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def _onDone(self, outcome: RunOutcome, results: ImportedResults | None) -> None:
        self.ui.stageLabel.text = outcome.message
        if outcome.log_tail and not outcome.ok:
            self.ui.logCollapsibleButton.collapsed = False
        if results is not None:
            self.ui.progressBar.value = 1000
            self._showResults(results)
        elif outcome.state.value == "failed":
            slicer.util.errorDisplay(outcome.message, detailedText=outcome.log_tail)
        self.updateButtons()

    # --- results ----------------------------------------------------------------------------------
    def _showResults(self, results: ImportedResults) -> None:
        self._results = results
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.segmentation = results.segmentation
            self._parameterNode.heatmap = results.heatmap
            self._parameterNode.lesionTable = results.lesion_table
        likelihood = results.pdac_likelihood
        self.ui.pdacLikelihoodLabel.text = "–" if likelihood is None else f"{100 * likelihood:.0f} %"
        table = self.ui.lesionTableWidget
        table.setRowCount(len(results.lesions))
        for row, lesion in enumerate(results.lesions):
            values = (
                f"L{lesion.id}",
                f"{lesion.volume_ml:.2f}",
                f"{lesion.diameter_mm:.1f}",
                f"{lesion.confidence:.2f}",
                lesion.versus_gland,
            )
            for column, value in enumerate(values):
                table.setItem(row, column, qt.QTableWidgetItem(value))
        table.resizeColumnsToContents()
        notes = report_notes(results.report)
        self.ui.findingsNotesLabel.text = "\n".join(notes)
        self.ui.findingsNotesLabel.visible = bool(notes)
        self.updateHeatmapDisplay()

    def onLesionClicked(self, row: int, column: int) -> None:
        if self._results and 0 <= row < len(self._results.lesions):
            self.logic.centre_on(self._results.lesions[row].centroid_ras)

    def updateHeatmapDisplay(self, *args) -> None:
        node = self._parameterNode.heatmap if self._parameterNode else None
        if node is None:
            return
        peak = (
            float((self._results.report.get("heatmap") or {}).get("peak_value") or 1.0)
            if self._results
            else 1.0
        )
        self.logic.set_heatmap_display(
            node,
            opacity=self.ui.heatmapOpacitySlider.value,
            threshold=self.ui.heatmapThresholdSlider.value * peak,
            visible=self.ui.showHeatmapCheckBox.checked,
        )

    def _legendPixmap(self) -> qt.QPixmap:
        pixmap = qt.QPixmap(160, 12)
        painter = qt.QPainter(pixmap)
        gradient = qt.QLinearGradient(0, 0, 160, 0)
        for n, (r, g, b, _alpha) in enumerate(HEATMAP_ANCHORS):
            gradient.setColorAt(
                n / (len(HEATMAP_ANCHORS) - 1), qt.QColor(int(255 * r), int(255 * g), int(255 * b))
            )
        painter.fillRect(0, 0, 160, 12, qt.QBrush(gradient))
        painter.end()
        return pixmap

    # --- correct and export -----------------------------------------------------------------------
    def _reference(self):
        phases = self.phaseNodes()
        return phases[engine.reference_phase(phases)] if phases else None

    def onCorrect(self) -> None:
        segmentation, reference = self._parameterNode.segmentation, self._reference()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.util.getModuleWidget("SegmentEditor").editor
        editor.setSegmentationNode(segmentation)
        if reference is not None:
            editor.setSourceVolumeNode(reference)

    def onCorrectionsFolder(self, path: str) -> None:
        if path:
            qt.QSettings().setValue(f"{SETTINGS_KEY}/home", str(Path(path).parent))
            self.logic.home = Path(path).parent

    def onExport(self, kind: str) -> None:
        segmentation, reference = self._parameterNode.segmentation, self._reference()
        if segmentation is None or reference is None:
            return
        if kind == "dicom":
            self._exportDicom(segmentation, reference)
            return
        name = qt.QFileDialog.getSaveFileName(
            None, _("Export segmentation"), f"{segmentation.GetName()}{kind}", f"*{kind}"
        )
        if not name:
            return
        path = Path(name if name.endswith(kind) else name + kind)
        self._export(segmentation, reference, path)

    def _exportDicom(self, segmentation, reference) -> None:
        if not came_from_dicom(reference):
            slicer.util.warningDisplay(
                _("DICOM SEG needs a reference volume loaded from DICOM; export NIfTI or .seg.nrrd instead.")
            )
            return
        uids = reference.GetAttribute("DICOM.instanceUIDs").split()
        files = [Path(slicer.dicomDatabase.fileForInstance(uid)) for uid in uids]
        folder = Path(tempfile.mkdtemp(prefix="pancreasai-seg-"))
        if self._export(segmentation, reference, folder / "PancreasAI_SEG.dcm", files):
            from DICOMLib import DICOMUtils

            DICOMUtils.importDicom(str(folder), copyFiles=True)

    def _export(self, segmentation, reference, path: Path, dicom_files: list[Path] | None = None) -> bool:
        try:
            result = self.logic.export(
                segmentation, reference, path, phase_nodes=self.phaseNodes(), source_dicom_files=dicom_files
            )
        except (ValueError, OSError, RuntimeError) as err:
            slicer.util.errorDisplay(_("Export failed: {error}").format(error=err))
            return False
        notes = [_("Wrote {path} (1 pancreas, 2 tumour).").format(path=result.path)]
        if result.ignored_segments:
            notes.append(
                _("Left out segments that are neither pancreas nor tumour: {names}.").format(
                    names=", ".join(result.ignored_segments)
                )
            )
        if result.record_dir:
            notes.append(_("Correction record kept in {path}.").format(path=result.record_dir))
        slicer.util.infoDisplay("\n".join(notes))
        logging.info(" ".join(notes))
        return True


def _loadDemoReference(out_dir: Path):
    """The demo keeps no CT, so its label map's grid stands in as the reference volume."""
    return slicer.util.loadVolume(
        str(out_dir / "labels.nii.gz"), {"name": "PancreasAI demo reference", "show": False}
    )
