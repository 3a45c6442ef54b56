"""Errors raised by the ledger."""

from __future__ import annotations

from iotwarden.errors import IotwardenError

__all__ = ["InvalidEntryError", "LedgerError", "LedgerIntegrityError"]


class LedgerError(IotwardenError):
    """The ledger cannot be opened, read, written or verified."""


class InvalidEntryError(LedgerError, ValueError):
    """An entry cannot be encoded as canonical JSON (bad kind, actor or payload)."""


class LedgerIntegrityError(LedgerError):
    """Verification found a stored entry, hash or tree head that does not check out.

    Attributes:
        index: First bad entry index, or None when the failure is not tied to
            one entry (for example a checkpoint from another log).
        reason: What failed, in one line.
    """

    def __init__(self, index: int | None, reason: str) -> None:
        where = f"entry {index}: " if index is not None else ""
        super().__init__(f"ledger verification failed at {where}{reason}" if where else f"ledger verification failed: {reason}")
        self.index = index
        self.reason = reason
