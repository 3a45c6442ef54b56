"""Canonical JSON encoding of ledger entries.

Each entry is one JSON object with exactly these members:

``index``
    The entry's 0-based position in the log (integer). Storing it inside the
    hashed bytes makes a moved, inserted or deleted entry show up at its own
    position during verification.
``kind``
    A non-empty type name chosen by the caller, for example ``"alert"``.
``actor``
    Who or what caused the entry (a string), or ``null``.
``time``
    When the entry was appended, in seconds since the Unix epoch, UTC.
``payload``
    The caller's data, a JSON object.

The bytes that are hashed and stored are the canonical encoding of that object:

* UTF-8, with non-ASCII characters written as themselves rather than as
  ``\\uXXXX`` escapes. Quotes, backslashes and control characters are escaped
  the way Python's :func:`json.dumps` escapes them (``\\"``, ``\\\\``, ``\\n``,
  ``\\u0000``).
* Object members sorted by key in Unicode code point order; no whitespace
  (separators ``,`` and ``:``).
* Integers in decimal. Floats in Python's ``repr`` form, the shortest text that
  reads back as the same double (``0.1``, ``5.0``, ``1e+100``). NaN and
  infinities are rejected.
* Object keys must be strings, and values must be ``dict``, ``list``,
  ``tuple`` (encoded as an array), ``str``, ``int``, ``float``, ``bool`` or
  ``None``. Anything else is rejected rather than converted.

This is close to RFC 8785 (JSON Canonicalization Scheme) but not identical:
RFC 8785 sorts keys by UTF-16 code units and writes numbers the ECMAScript way
(``5`` for ``5.0``). A verifier in another language must follow the rules
above, or simply hash the stored bytes as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from iotwarden.ledger.errors import InvalidEntryError

__all__ = ["DecodedEntry", "canonical_json", "decode_entry", "encode_entry"]

ENTRY_KEYS = frozenset({"index", "kind", "actor", "time", "payload"})

_encoder = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
)


@dataclass(frozen=True, slots=True)
class DecodedEntry:
    """The members of one stored entry."""

    index: int
    kind: str
    actor: str | None
    time: float
    payload: dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (see the module docstring).

    Raises:
        InvalidEntryError: a key is not a string, a value has an unsupported
            type, a float is NaN or infinite, or a string is not valid Unicode.
    """
    _check_keys(value, "$")
    try:
        return _encoder.encode(value).encode("utf-8")
    except ValueError as exc:
        # json raises ValueError for NaN and infinities when allow_nan=False.
        raise InvalidEntryError(f"value cannot be stored in the ledger: {exc}") from exc
    except TypeError as exc:
        raise InvalidEntryError(f"value cannot be stored in the ledger: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise InvalidEntryError(f"string is not valid Unicode (lone surrogate?): {exc.object[exc.start:exc.end]!r}") from exc


def encode_entry(index: int, kind: str, actor: str | None, time: float, payload: dict[str, Any]) -> bytes:
    """Encode one ledger entry canonically after checking its members."""
    _check_members(kind, actor, payload)
    if not math.isfinite(time):
        raise InvalidEntryError(f"entry time must be finite, got {time!r}")
    document = {"index": index, "kind": kind, "actor": actor, "time": time, "payload": payload}
    return canonical_json(document)


def decode_entry(data: bytes) -> DecodedEntry:
    """Parse stored entry bytes and check that they are in canonical form.

    Raises:
        InvalidEntryError: the bytes are not UTF-8 JSON, not canonical, or do
            not have exactly the entry members with the right types.
    """
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEntryError(f"entry is not valid UTF-8 JSON: {exc}") from exc

    if not isinstance(document, dict) or set(document) != ENTRY_KEYS:
        raise InvalidEntryError(f"entry must be an object with members {sorted(ENTRY_KEYS)}")
    index = document["index"]
    kind = document["kind"]
    actor = document["actor"]
    time = document["time"]
    payload = document["payload"]
    if type(index) is not int or index < 0:
        raise InvalidEntryError(f"entry index must be a non-negative integer, got {index!r}")
    if not isinstance(time, (int, float)) or isinstance(time, bool):
        raise InvalidEntryError(f"entry time must be a number, got {time!r}")

    _check_members(kind, actor, payload)
    if canonical_json(document) != data:
        raise InvalidEntryError("entry is valid JSON but not in canonical form")
    return DecodedEntry(index=index, kind=kind, actor=actor, time=float(time), payload=payload)


def _check_members(kind: Any, actor: Any, payload: Any) -> None:
    if not isinstance(kind, str) or not kind:
        raise InvalidEntryError(f"entry kind must be a non-empty string, got {kind!r}")
    if actor is not None and not isinstance(actor, str):
        raise InvalidEntryError(f"entry actor must be a string or None, got {type(actor).__name__}")
    if not isinstance(payload, dict):
        raise InvalidEntryError(f"entry payload must be a dict, got {type(payload).__name__}")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _check_keys(value: Any, path: str) -> None:
    # json.dumps turns int, float, bool and None keys into strings, which could
    # map two different keys to the same text, so only str keys are accepted.
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidEntryError(f"object key at {path} must be a string, got {type(key).__name__} {key!r}")
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, f"{path}[{position}]")
