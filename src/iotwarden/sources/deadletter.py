"""The dead-letter file: rejected records and dropped fields as JSON lines.

Each line is one JSON object, so the file can be read with ``jq``::

    jq -c 'select(.kind == "rejected") | {source, line, reason}' iotwarden.deadletter.jsonl

Fields of a line:

* ``recorded_at``: when the entry was written, ISO 8601 UTC.
* ``kind``: ``rejected``, ``duplicate`` (from a Rejection) or
  ``field_issue`` (from a FieldIssue).
* ``source``, ``line``, ``field``, ``reason``: as in the Rejection or
  FieldIssue (``line`` and ``field`` may be null).
* ``raw``: the raw record, truncated to at most :data:`MAX_RAW_BYTES` bytes of
  UTF-8; ``raw_truncated`` is true when it was cut. A field issue has the
  record it came from where the reader kept its text, else an empty string.

The file is opened in append mode, and each entry is flushed as it is
written, so ``tail -f`` shows entries at once and a crash loses at most the
entry being written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO

from iotwarden.errors import IotwardenError
from iotwarden.observation import FieldIssue, Rejection, format_time

__all__ = ["MAX_RAW_BYTES", "DeadLetterWriter"]

logger = logging.getLogger(__name__)

MAX_RAW_BYTES = 4096


class DeadLetterWriter:
    """Append rejections and field issues to a JSON-lines file.

    Use it as a context manager, or call :meth:`close`. Writing is
    thread-safe, so several sources may share one writer.

    Args:
        path: The dead-letter file; it and its parent folder are created if
            needed, and an existing file is appended to.
        max_raw_bytes: Longest raw record kept, in bytes of UTF-8.

    Raises:
        IotwardenError: the file cannot be opened or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_raw_bytes: int = MAX_RAW_BYTES) -> None:
        self.path = Path(path)
        self.max_raw_bytes = max_raw_bytes
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise IotwardenError(f"cannot open dead-letter file {self.path}: {exc.strerror or exc}") from exc

    def write(self, item: Rejection | FieldIssue) -> None:
        """Append one entry and flush it to the file."""
        entry = self._entry(item)
        text = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is None:
                raise IotwardenError(f"dead-letter file {self.path} is closed")
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as exc:
                raise IotwardenError(f"cannot write dead-letter file {self.path}: {exc.strerror or exc}") from exc
            self._counts[entry["kind"]] += 1

    def write_all(self, items: list[Rejection | FieldIssue]) -> None:
        """Append several entries."""
        for item in items:
            self.write(item)

    @property
    def counts(self) -> dict[str, int]:
        """Entries written by this writer, by kind."""
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        """Close the file; closing twice is allowed."""
        with self._lock:
            if self._file is None:
                return
            self._file.close()
            self._file = None
        if self._counts:
            summary = ", ".join(f"{kind} {count}" for kind, count in sorted(self._counts.items()))
            logger.info("dead-letter file %s: wrote %s", self.path, summary)

    def __enter__(self) -> DeadLetterWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _entry(self, item: Rejection | FieldIssue) -> dict[str, object]:
        if isinstance(item, Rejection):
            raw, truncated = _truncate_utf8(item.raw, self.max_raw_bytes)
            return {
                "recorded_at": format_time(time.time()),
                "kind": item.kind,
                "source": item.source,
                "line": item.line,
                "field": item.field,
                "reason": item.reason,
                "raw": raw,
                "raw_truncated": truncated,
            }
        if isinstance(item, FieldIssue):
            raw, truncated = _truncate_utf8(item.raw, self.max_raw_bytes)
            return {
                "recorded_at": format_time(time.time()),
                "kind": "field_issue",
                "source": item.source,
                "line": item.line,
                "field": item.field,
                "reason": item.reason,
                "raw": raw,
                "raw_truncated": truncated,
            }
        raise TypeError(f"expected a Rejection or FieldIssue, got {type(item).__name__}")


def _truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` bytes of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        # Decoding again replaces lone surrogates, which the file's encoder rejects.
        return encoded.decode("utf-8"), False
    return encoded[:max_bytes].decode("utf-8", errors="ignore"), True
