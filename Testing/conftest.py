"""Shared pytest fixtures: the optional ../shared/data folder and small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when it is present; tests that need it skip cleanly in a user's fresh clone."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip("../shared/data is absent (it is only beside the project on the developers' machines)")
    return SHARED_DATA
