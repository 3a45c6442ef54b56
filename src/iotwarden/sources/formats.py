"""Input formats that ``iotwarden detect --format`` accepts, by name.

``csv``, ``jsonl`` and ``mqtt`` (``<topic> <payload>`` lines) are read by
:func:`iotwarden.sources.files.read_records`. Other formats register a
reader here: a callable that takes the input paths and keyword options and
yields items, each an :class:`~iotwarden.observation.Observation`, a
:class:`~iotwarden.observation.FieldIssue`, a
:class:`~iotwarden.observation.Rejection` or a finished
:class:`~iotwarden.decisions.alerts.Alert` (for sources whose own rules
decide, such as a replayed LoRaWAN frame).

A module that provides formats calls :func:`register` at import time and is
listed in ``_FORMAT_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from iotwarden.errors import InvalidConfigError

__all__ = ["FILE_FORMATS", "FormatReader", "format_names", "get_reader", "register"]

FormatReader = Callable[..., Iterator[Any]]

FILE_FORMATS = ("csv", "jsonl", "mqtt")

# Modules that register more formats when imported.
_FORMAT_MODULES: tuple[str, ...] = (
    "iotwarden.sources.flows.formats",
    "iotwarden.sources.cellular",
    "iotwarden.sources.lorawan.formats",
)

_READERS: dict[str, tuple[FormatReader, str]] = {}
_loaded = False


def register(name: str, reader: FormatReader, description: str) -> None:
    """Make ``reader`` available as ``--format name``."""
    if name in FILE_FORMATS:
        raise InvalidConfigError(f"format name {name!r} is built in and cannot be registered again")
    _READERS[name] = (reader, description)


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _FORMAT_MODULES:
            importlib.import_module(module)


def format_names() -> list[str]:
    """Every format name, built-in ones first."""
    _load()
    return [*FILE_FORMATS, *sorted(_READERS)]


def get_reader(name: str) -> FormatReader:
    """Return the reader registered for ``name``."""
    _load()
    try:
        return _READERS[name][0]
    except KeyError:
        raise InvalidConfigError(f"unknown input format {name!r}; known formats: {', '.join(format_names())}") from None


def read_format(name: str, paths: Sequence[str], **options: Any) -> Iterator[Any]:
    """Read ``paths`` with the registered reader of ``name``."""
    return get_reader(name)(list(paths), **options)
