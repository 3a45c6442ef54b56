"""Default locations of the store, the dead-letter file and the signing key."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["data_dir", "dead_letter_path", "default_store_path"]

APP_NAME = "iotwarden"


def data_dir() -> Path:
    """Return the user's data directory, creating it if needed.

    ``IOTWARDEN_HOME`` overrides the platform default (for example
    ``~/.local/share/iotwarden`` on Linux).
    """
    override = os.environ.get("IOTWARDEN_HOME")
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    """Return the path of the default SQLite store."""
    return data_dir() / "iotwarden.db"


def dead_letter_path(store_path: str | os.PathLike[str]) -> Path:
    """Return the dead-letter file that sits beside a store."""
    store = Path(store_path)
    return store.with_name(store.stem + ".deadletter.jsonl")
