"""Loading engine settings from YAML or JSON files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from iotwarden.engine.config import EngineConfig
from iotwarden.errors import InvalidConfigError

__all__ = ["load_engine_config"]


def load_engine_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> EngineConfig:
    """Read engine settings from a YAML or JSON file, then apply ``overrides``.

    The file contains a mapping of :class:`EngineConfig` fields, either at the
    top level or under an ``engine:`` key. Unknown keys are rejected by name.
    """
    data: dict[str, Any] = {}
    if path is not None:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidConfigError(f"cannot read the settings file {source}: {error.strerror}") from error
        try:
            loaded = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise InvalidConfigError(f"invalid settings file {source}: {error}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InvalidConfigError(f"invalid settings file {source}: expected a mapping of settings, got {type(loaded).__name__}")
        data = loaded.get("engine", loaded) if isinstance(loaded.get("engine"), dict) else loaded
        try:
            return EngineConfig.from_dict({**data, **overrides})
        except (InvalidConfigError, TypeError) as error:
            raise InvalidConfigError(f"{source}: {error}") from error
    return EngineConfig.from_dict(overrides)
