"""Shared fixtures: dataset location and an isolated data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """Return ``../shared`` beside the checkout, or ``IOTWARDEN_SHARED``."""
    return Path(os.environ.get("IOTWARDEN_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def datasets_dir() -> Path:
    """Folder of the real public datasets; skips the test when it is absent."""
    path = shared_dir() / "datasets"
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set IOTWARDEN_SHARED to the folder holding datasets/)")
    return path


@pytest.fixture
def cases_dir() -> Path:
    """Folder of the bad-input cases; skips the test when it is absent."""
    path = shared_dir() / "cases" / "inputs"
    if not path.is_dir():
        pytest.skip(f"bad-input cases not found at {path} (set IOTWARDEN_SHARED to the folder holding cases/)")
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default data directory at a temporary folder for every test."""
    home = tmp_path_factory.mktemp("iotwarden-home")
    monkeypatch.setenv("IOTWARDEN_HOME", str(home))
    return home
