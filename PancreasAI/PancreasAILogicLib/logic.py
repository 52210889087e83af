"""The module's logic without Qt: scene -> files -> engine process -> new nodes, and export.

`PancreasAI.PancreasAILogic` adds Slicer's ScriptedLoadableModuleLogic on top; tests drive this class
directly against slicer-core's real MRML scene with a Popen runner and a fake engine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from PancreasAILogicLib import engine
from PancreasAILogicLib.exporting import segmentation_to_labels, store_correction, write_labels
from PancreasAILogicLib.results import (
    OUTPUT_DIR_ATTRIBUTE,
    ImportedResults,
    ResultImporter,
    centre_slice_views,
    set_heatmap_threshold,
    show_in_foreground,
)
from PancreasAILogicLib.runner import EngineRunner, PopenRunner, ProgressEvent, RunOutcome, RunState
from PancreasAILogicLib.scene_io import came_from_dicom, write_phase_volumes

RunnerFactory = Callable[..., EngineRunner]
DoneCallback = Callable[[RunOutcome, "ImportedResults | None"], None]


def default_home() -> Path:
    """The user folder for kept runs and correction records (PANCREASAI_HOME overrides it)."""
    return Path(os.environ.get("PANCREASAI_HOME") or Path.home() / "PancreasAI")


@dataclass
class ExportResult:
    path: Path
    record_dir: Path | None
    ignored_segments: list[str]


class PancreasAICore:
    def __init__(
        self,
        scene,
        *,
        runner_factory: RunnerFactory = PopenRunner,
        python: str | None = None,
        home: Path | None = None,
        color_logic=None,
        engine_env: Mapping[str, str] | None = None,
        engine_prefix: list[str] | None = None,
    ) -> None:
        self.scene = scene
        self.runner_factory = runner_factory
        self.python = python or engine.python_executable(inside_slicer=False)
        self.home = Path(home) if home else default_home()
        self.color_logic = color_logic
        self.engine_env = dict(engine_env) if engine_env is not None else engine.engine_environment()
        # The command that stands for `pancreasai` (tests put a fake engine script here).
        self.engine_prefix = engine_prefix or engine.engine_command(self.python)
        self.runner: EngineRunner | None = None
        self._identify_runner: EngineRunner | None = None

    # --- phase identification -----------------------------------------------------------------
    def identify_phases(self, volume_nodes: list, on_done: Callable[[dict, str], None]) -> None:
        """Ask the engine which loaded volume is which phase; on_done(phase -> node, message)."""
        work = Path(tempfile.mkdtemp(prefix="pancreasai-inspect-"))
        by_name: dict[str, object] = {}
        paths = []
        for n, node in enumerate(volume_nodes):
            path = write_phase_volumes({f"volume{n}": node}, work)[f"volume{n}"]
            by_name[path.name] = node
            paths.append(path)

        def finished(outcome: RunOutcome) -> None:
            shutil.rmtree(work, ignore_errors=True)
            if not outcome.ok:
                on_done({}, outcome.message)
                return
            try:
                suggestion = engine.parse_inspect_json("\n".join(runner.stdout_lines))
            except ValueError as err:
                on_done({}, str(err))
                return
            found = {phase: by_name[name] for phase, name in suggestion.assignment.items() if name in by_name}
            summary = (
                ", ".join(f"{p} {suggestion.confidence[p]:.2f}" for p in found) or "no contrast phase found"
            )
            on_done(found, f"Phase identification: {summary}.")

        runner = self.runner_factory(on_finished=finished)
        runner.start([*self.engine_prefix, *engine.inspect_arguments(paths)], env=self.engine_env)
        self._identify_runner = runner

    # --- segmentation ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def start_segmentation(
        self,
        phase_nodes: Mapping[str, object],
        *,
        device: str = "auto",
        heatmap: bool = True,
        stage1_model: Path | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_done: DoneCallback | None = None,
    ) -> None:
        """Write the phases, start the engine and return at once; on_done runs when it has ended."""
        if self.running:
            raise RuntimeError("A segmentation is already running; stop it first.")
        phases = {p: n for p, n in phase_nodes.items() if n is not None}
        if not phases:
            raise ValueError("Choose at least one phase volume (arterial, venous or delayed).")
        reference = phases[engine.reference_phase(phases)]
        run_name = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.home.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="pancreasai-run-"))
        out_dir = self.home / "runs" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        try:
            inputs = write_phase_volumes(phases, work / "inputs")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        args = engine.segment_arguments(
            inputs, out_dir, device=device, heatmap=heatmap, stage1_model=stage1_model
        )
        self._start(args, work, out_dir, reference, run_name, on_progress, on_log, on_done)

    def start_demo(
        self,
        reference_factory: Callable[[Path], object],
        *,
        on_progress=None,
        on_log=None,
        on_done: DoneCallback | None = None,
    ) -> None:
        """Run `pancreasai demo`; reference_factory(out_dir) gives the volume to import onto."""
        work = Path(tempfile.mkdtemp(prefix="pancreasai-demo-"))
        out_dir = work / "out"
        run_name = "demo " + _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self._start(
            engine.demo_arguments(out_dir),
            work,
            out_dir,
            reference_factory,
            run_name,
            on_progress,
            on_log,
            on_done,
        )

    def _start(
        self,
        args,
        work: Path,
        out_dir: Path,
        reference,
        run_name: str,
        on_progress,
        on_log,
        on_done: DoneCallback | None,
    ) -> None:
        def finished(outcome: RunOutcome) -> None:
            results = None
            try:
                if outcome.ok:
                    target = reference(out_dir) if callable(reference) else reference
                    try:
                        results = self.import_results(out_dir, target, run_name)
                    except (OSError, ValueError, RuntimeError, KeyError) as err:
                        outcome = RunOutcome(
                            RunState.FAILED,
                            outcome.exit_code,
                            f"The results could not be imported: {err} The scene was left unchanged.",
                            outcome.log_tail,
                        )
                if results is None:
                    shutil.rmtree(out_dir, ignore_errors=True)  # nothing of a failed run is kept
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if on_done:
                on_done(outcome, results)

        self.runner = self.runner_factory(on_progress=on_progress, on_log=on_log, on_finished=finished)
        self.runner.start([*self.engine_prefix, *args], env=self.engine_env)

    def poll(self) -> None:
        if self.runner is not None:
            self.runner.poll()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def import_results(self, out_dir: Path, reference, run_name: str) -> ImportedResults:
        return ResultImporter(self.scene, self.color_logic).import_folder(out_dir, reference, run_name)

    # --- display --------------------------------------------------------------------------------
    def set_heatmap_display(
        self,
        heatmap_node,
        *,
        opacity: float | None = None,
        threshold: float | None = None,
        visible: bool = True,
    ) -> None:
        if heatmap_node is None:
            return
        if threshold is not None:
            set_heatmap_threshold(heatmap_node, threshold)
        show_in_foreground(self.scene, heatmap_node if visible else None, 0.5 if opacity is None else opacity)

    def centre_on(self, ras: tuple[float, float, float]) -> None:
        centre_slice_views(self.scene, ras)

    # --- export ---------------------------------------------------------------------------------
    def export(
        self,
        segmentation_node,
        reference,
        path: Path,
        *,
        phase_nodes: Mapping[str, object],
        keep_record: bool = True,
        source_dicom_files: list[Path] | None = None,
    ) -> ExportResult:
        """Write the segmentation (fixed labels on the reference grid) and store a correction record."""
        exported = segmentation_to_labels(segmentation_node, reference)
        if path.name.lower().endswith(".dcm") and not came_from_dicom(reference):
            raise ValueError("DICOM SEG export needs a reference volume loaded from DICOM.")
        written = write_labels(path, exported.labels, source_dicom_files or [])
        record = None
        prediction = segmentation_node.GetAttribute("PancreasAI.Prediction")
        out_dir = segmentation_node.GetAttribute(OUTPUT_DIR_ATTRIBUTE)
        if keep_record and prediction and Path(prediction).is_file():
            report_path = Path(out_dir or Path(prediction).parent) / "report.json"
            report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
            record = store_correction(
                self.home / "corrections",
                phase_nodes=dict(phase_nodes),
                prediction_path=Path(prediction),
                corrected=exported.labels,
                report=report,
            )
        return ExportResult(written, record, exported.ignored_segments)
