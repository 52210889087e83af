"""Static checks of the module that need no Slicer: Slicer names, the .ui file, the CMake lists, layering."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "PancreasAI"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "PancreasAI.ui"
SLICER_API_TOOLS = REPO_ROOT.parent / "shared" / "slicer_api" / "tools"
MAX_LINES = 400


def module_python_files() -> list[Path]:
    return sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_slicer_names_exist_and_are_not_deprecated() -> None:
    if not (SLICER_API_TOOLS / "check_module_names.py").is_file():
        pytest.skip(
            "../shared/slicer_api is absent (it is only beside the project on the developers' machines)"
        )
    sys.path.insert(0, str(SLICER_API_TOOLS))
    try:
        from check_module_names import find_problems
    finally:
        sys.path.remove(str(SLICER_API_TOOLS))
    assert find_problems([str(MODULE_DIR)]) == []


def test_no_deprecated_master_names() -> None:
    for path in module_python_files():
        assert not re.search(r"Master(Volume|Representation)", path.read_text(encoding="utf-8")), path


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()  # raises on invalid XML
    assert root.tag == "ui" and root.get("version") == "4.0"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    return {w.get("name"): w for w in root.iter("widget")}


def test_ui_is_valid_designer_xml_with_declared_custom_widgets() -> None:
    root = ET.parse(UI_FILE).getroot()
    assert root.findtext("class") == "PancreasAI"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == "PancreasAI"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    qt_classes = {
        "QLabel",
        "QPushButton",
        "QComboBox",
        "QCheckBox",
        "QProgressBar",
        "QPlainTextEdit",
        "QTableWidget",
    }
    for widget in ui_widgets().values():
        assert widget.get("class") in declared | qt_classes, widget.get("class")
    for connection in root.iter("connection"):
        assert (
            connection.findtext("sender") in ui_widgets() and connection.findtext("receiver") in ui_widgets()
        )


def test_every_widget_the_code_uses_exists_in_the_ui() -> None:
    widgets = ui_widgets()
    used = set()
    for path in module_python_files():
        used |= set(re.findall(r"self\.ui\.(\w+)", path.read_text(encoding="utf-8")))
    assert used, "the widget code was not found"
    assert sorted(used - set(widgets)) == []


def parameter_fields() -> set[str]:
    tree = ast.parse((MODULE_DIR / "PancreasAI.py").read_text(encoding="utf-8"))
    cls = next(
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "PancreasAIParameterNode"
    )
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_ui_parameter_names_are_parameter_node_fields() -> None:
    root = ET.parse(UI_FILE).getroot()
    names = {p.findtext("string") for p in root.iter("property") if p.get("name") == "SlicerParameterName"}
    assert names and names <= parameter_fields()


def test_cmake_lists_every_module_file_and_resource() -> None:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", text, re.S).group(1).split()
    listed = {s.replace("${MODULE_NAME}", "PancreasAI") for s in scripts}
    assert listed == {p.relative_to(MODULE_DIR).as_posix() for p in module_python_files()}
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", text, re.S).group(1).split()
    listed_resources = {r.replace("${MODULE_NAME}", "PancreasAI") for r in resources}
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()
    }
    assert listed_resources == on_disk
    assert "WITH_GENERIC_TESTS" in text
    assert (
        "GLOB_RECURSE PANCREASAI_ENGINE_SCRIPTS" in text and "PancreasAILib/*.py" in text
    )  # the engine, by glob
    top = (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in (
        "EXTENSION_CATEGORY",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert re.search(rf'set\({key} "[^"]+"\)', top), key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "add_subdirectory(PancreasAI)" in top


def test_no_module_file_is_too_long() -> None:
    long = {
        p.name: n
        for p in module_python_files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_never_imports_slicer_and_module_never_imports_models() -> None:
    for path in (REPO_ROOT / "PancreasAILib").rglob("*.py"):
        assert not imported_roots(path) & {"slicer", "qt", "ctk", "vtk", "PythonQt"}, path
    for path in module_python_files():
        text = path.read_text(encoding="utf-8")
        assert not re.search(
            r"\b(import torch|from torch|import monai|from monai|PancreasAILib\.models|PancreasAILib\.pipeline)",
            text,
        ), path


def test_engine_requirements_match_pyproject() -> None:
    from PancreasAILogicLib.dependencies import ENGINE_REQUIREMENTS

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [d for d in data["project"]["dependencies"] if not d.startswith("torch")]
    assert sorted(ENGINE_REQUIREMENTS) == sorted(wanted)


def test_install_plan_online_and_offline(tmp_path) -> None:
    from PancreasAILogicLib.dependencies import plan_install

    nothing = plan_install(installed_version=lambda name: None)
    assert nothing.torch_needed and "numpy>=1.26,<3" not in nothing.packages  # Slicer's own numpy is kept
    assert '"monai>=1.4,<2"' in nothing.pip_arguments() and "--no-index" not in nothing.pip_arguments()
    offline = plan_install(tmp_path, installed_version=lambda name: None)
    assert offline.pip_arguments().startswith(f'--no-index --find-links "{tmp_path}"')
    assert offline.packages[0].startswith("torch")
    assert plan_install(installed_version=lambda name: "1.0").empty


def test_engine_command_lines(tmp_path) -> None:
    from PancreasAILogicLib import engine

    args = engine.segment_arguments(
        {"delayed": tmp_path / "d.nii.gz", "venous": tmp_path / "v.nii.gz"},
        tmp_path / "out",
        device="cpu",
        heatmap=False,
    )
    assert args == [
        "segment",
        "--venous",
        str(tmp_path / "v.nii.gz"),
        "--delayed",
        str(tmp_path / "d.nii.gz"),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--no-heatmap",
        "--progress",
        "json",
    ]
    with_model = engine.segment_arguments(
        {"venous": tmp_path / "v.nii.gz"}, tmp_path / "out", stage1_model=tmp_path / "nnunet"
    )
    assert with_model[-2:] == ["--stage1-model", str(tmp_path / "nnunet")]
    with pytest.raises(ValueError):
        engine.segment_arguments({}, tmp_path)
    with pytest.raises(ValueError):
        engine.segment_arguments({"venous": tmp_path}, tmp_path, device="tpu")
    assert engine.reference_phase({"arterial": 1, "delayed": 2}) == "arterial"
    assert engine.engine_root() == REPO_ROOT
    env = engine.engine_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":")[:2] == [str(REPO_ROOT), "/x"]


def test_inspect_json_parsing_picks_the_best_series_per_phase() -> None:
    from PancreasAILogicLib.engine import parse_inspect_json

    text = """warning first
    {"series": [
      {"series": {"name": "a.nii.gz"}, "identification": {"phase": "venous", "confidence": 0.6, "evidence": ["x"]}},
      {"series": {"name": "b.nii.gz"}, "identification": {"phase": "venous", "confidence": 0.8, "evidence": []}},
      {"series": {"name": "c.nii.gz"}, "identification": {"phase": null, "confidence": 0.9, "evidence": []}}],
     "case": {}}"""
    suggestion = parse_inspect_json(text)
    assert suggestion.assignment == {"venous": "b.nii.gz"} and suggestion.evidence["a.nii.gz"] == ["x"]
    with pytest.raises(ValueError):
        parse_inspect_json("no json here")
