"""First-use install of the engine's Python packages inside Slicer, online or from a folder of wheels.

Order matters: torch comes first through the PyTorch extension (it picks the CUDA build that matches
the machine), then the rest of the engine's requirements with pip. `slicer.packaging` (Slicer 5.10+)
is preferred; older Slicers get `slicer.util.pip_install`. Nothing installs without the user's yes.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# The engine's runtime requirements (pyproject.toml [project].dependencies, torch apart);
# Testing/slicer/test_module_files.py keeps the two lists equal.
ENGINE_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "SimpleITK>=2.3,<3",
    "pydicom>=3.0,<4",
    "highdicom>=0.23,<1",
    "slicerio>=1.1,<2",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
    "safetensors>=0.4,<1",
    "monai>=1.4,<2",
    "einops>=0.7,<1",
)
TORCH_REQUIREMENT = "torch>=2.2"
# Packages Slicer ships itself: never reinstall them (a second numpy/SimpleITK would break Slicer).
SLICER_BUNDLED: frozenset[str] = frozenset({"numpy", "simpleitk"})


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def missing_requirements(
    requirements: Iterable[str] = ENGINE_REQUIREMENTS,
    installed_version: Callable[[str], str | None] | None = None,
) -> list[str]:
    """Requirements whose package is absent (version ranges are left to pip, which knows them better)."""

    def default_version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    lookup = installed_version or default_version
    return [r for r in requirements if lookup(_name(r)) is None]


@dataclass
class InstallPlan:
    """What a first-use install will do, shown to the user before they confirm."""

    torch_needed: bool
    packages: list[str] = field(default_factory=list)
    wheel_folder: Path | None = None  # offline: pip --no-index --find-links FOLDER

    @property
    def empty(self) -> bool:
        return not self.torch_needed and not self.packages

    def pip_arguments(self) -> str:
        """One string for pip, as slicer.packaging.pip_install and slicer.util.pip_install take it."""
        offline = f'--no-index --find-links "{self.wheel_folder}" ' if self.wheel_folder else ""
        return offline + " ".join(f'"{p}"' for p in self.packages)

    def describe(self) -> str:
        lines = ["PancreasAI needs these Python packages before its first run:"]
        if self.torch_needed:
            lines.append("  - PyTorch (through the PyTorch extension when it is installed)")
        lines += [f"  - {p}" for p in self.packages]
        source = f"the wheel folder {self.wheel_folder}" if self.wheel_folder else "the internet (PyPI)"
        lines.append(
            f"They will be installed from {source} into Slicer's Python. This can take several minutes."
        )
        return "\n".join(lines)


def plan_install(
    wheel_folder: Path | None = None,
    installed_version: Callable[[str], str | None] | None = None,
) -> InstallPlan:
    missing = [
        r
        for r in missing_requirements(ENGINE_REQUIREMENTS, installed_version)
        if _name(r) not in SLICER_BUNDLED
    ]
    torch_needed = bool(missing_requirements([TORCH_REQUIREMENT], installed_version))
    if wheel_folder is not None and torch_needed:
        missing.insert(0, TORCH_REQUIREMENT)  # offline: the wheel folder must hold torch too
    return InstallPlan(torch_needed=torch_needed, packages=missing, wheel_folder=wheel_folder)


def install_in_slicer(plan: InstallPlan, confirm: Callable[[str], bool]) -> bool:
    """Run the plan inside Slicer after the user confirms. False when the user declined."""
    if plan.empty:
        return True
    if not confirm(plan.describe()):
        return False
    import slicer

    if plan.torch_needed and plan.wheel_folder is None:
        _install_torch()
    if plan.packages:
        packaging = getattr(slicer, "packaging", None)  # Slicer >= 5.10
        if packaging is not None:
            packaging.pip_install(plan.pip_arguments(), requester="PancreasAI")
        else:
            slicer.util.pip_install(plan.pip_arguments())
    return True


def _install_torch() -> None:
    """torch through the PyTorch extension (right CUDA build); plain pip when the extension is absent."""
    import slicer

    try:
        import PyTorchUtils  # the PyTorch extension, declared as a dependency in CMakeLists.txt
    except ImportError:
        slicer.util.pip_install(f'"{TORCH_REQUIREMENT}"')
        return
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        torch = torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.2")
        if torch is None:
            raise RuntimeError("PyTorch could not be installed through the PyTorch extension.")
