"""How the module calls the engine: the Python to use, the environment and the command lines.

The module never imports the engine's model code; it runs `python -m PancreasAILib.cli.main ...` in a
child process. The engine folder is found next to the module (installed extension) or one level up
(source tree) and put on the child's PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PHASES: tuple[str, ...] = ("arterial", "venous", "delayed")
REFERENCE_PREFERENCE: tuple[str, ...] = ("venous", "arterial", "delayed")  # as PancreasAILib.phases
DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu")
MODULE_DIR = Path(__file__).resolve().parents[1]


def engine_root(module_dir: Path = MODULE_DIR) -> Path:
    """The folder that holds the PancreasAILib package."""
    for candidate in (module_dir, module_dir.parent):
        if (candidate / "PancreasAILib" / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(f"PancreasAILib was not found next to {module_dir}; reinstall the extension.")


def python_executable(inside_slicer: bool) -> str:
    """PythonSlicer inside Slicer (same site-packages as Slicer), else the running interpreter."""
    if inside_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = Path(sys.executable).with_name("PythonSlicer" + Path(sys.executable).suffix)
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def engine_environment(base: Mapping[str, str] | None = None, root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    root = root or engine_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they are printed
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def engine_command(python: str, *args: str) -> list[str]:
    return [python, "-m", "PancreasAILib.cli.main", *args]


def segment_arguments(
    phases: Mapping[str, Path],
    out_dir: Path,
    *,
    device: str = "auto",
    heatmap: bool = True,
    stage1_model: Path | None = None,
) -> list[str]:
    if not phases:
        raise ValueError("Choose at least one phase (arterial, venous or delayed).")
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise ValueError(f"Unknown phase(s): {', '.join(sorted(unknown))}.")
    if device not in DEVICES:
        raise ValueError(f"Device must be one of {', '.join(DEVICES)}; got {device!r}.")
    args = ["segment"]
    for phase in PHASES:
        if phase in phases:
            args += [f"--{phase}", str(phases[phase])]
    args += [
        "--out",
        str(out_dir),
        "--device",
        device,
        "--heatmap" if heatmap else "--no-heatmap",
        "--progress",
        "json",
    ]
    if stage1_model is not None:  # the engine checks the folder and says what is wrong with it
        args += ["--stage1-model", str(stage1_model)]
    return args


def demo_arguments(out_dir: Path) -> list[str]:
    return ["demo", "--out", str(out_dir), "--overwrite", "--progress", "json"]


def inspect_arguments(paths: list[Path]) -> list[str]:
    return ["inspect", "--json", *[str(p) for p in paths]]


def reference_phase(phases: Mapping[str, object]) -> str:
    return next(p for p in REFERENCE_PREFERENCE if p in phases)


@dataclass
class PhaseSuggestion:
    """The engine's phase guess for each written volume (by file name), best candidate per phase."""

    assignment: dict[str, str] = field(default_factory=dict)  # phase -> file name
    confidence: dict[str, float] = field(default_factory=dict)  # phase -> 0..1
    evidence: dict[str, list[str]] = field(default_factory=dict)  # file name -> evidence lines


def parse_inspect_json(text: str) -> PhaseSuggestion:
    """Read `pancreasai inspect --json` output. Raises ValueError when it is not that output."""
    start = text.find("{")
    if start < 0:
        raise ValueError("The engine printed no JSON for phase identification.")
    try:
        data = json.loads(text[start:])
        series = data["series"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"Unreadable phase identification output: {err}") from err
    suggestion = PhaseSuggestion()
    for item in series:
        name = (item.get("series") or {}).get("name")
        ident = item.get("identification") or {}
        if not name:
            continue
        suggestion.evidence[name] = list(ident.get("evidence") or [])
        phase, confidence = ident.get("phase"), float(ident.get("confidence") or 0.0)
        if phase in PHASES and confidence > suggestion.confidence.get(phase, -1.0):
            suggestion.assignment[phase] = name
            suggestion.confidence[phase] = confidence
    return suggestion
