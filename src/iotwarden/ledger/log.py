"""The ledger: an append-only Merkle tree log in SQLite with signed tree heads.

Tables (created with ``CREATE TABLE IF NOT EXISTS`` in the connection's
database, usually the alert store):

``ledger_entries(idx, entry)``
    One row per entry: the 0-based index and the canonical JSON bytes
    (see :mod:`iotwarden.ledger.encoding`).
``ledger_nodes(level, idx, hash)``
    Hash of every perfect subtree. Level 0 contains the leaf hashes, and
    ``(level, idx)`` covers entries ``[idx * 2**level, (idx + 1) * 2**level)``.
    Each node is written once, when its last entry is appended, so there are
    about 2n rows. Roots and proofs for any size read O(log n) of them.
``ledger_tree_heads``
    Signed tree heads: size, root hash, timestamp, key id, public key and
    signature.

Triggers reject UPDATE and DELETE on all three tables, so other code sharing
the connection cannot change the log by mistake. They are no defence against
someone editing the file, which is what :meth:`Ledger.verify` is for.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotwarden.ledger import merkle
from iotwarden.ledger.audit import VerifyReport, verify_ledger
from iotwarden.ledger.encoding import decode_entry, encode_entry
from iotwarden.ledger.errors import InvalidEntryError, LedgerError
from iotwarden.ledger.keys import LedgerKey, SignedTreeHead, ledger_key_path, write_checkpoint

__all__ = ["Ledger", "LedgerEntry", "LedgerItem"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# One (kind, payload) or (kind, payload, actor) tuple per entry.
LedgerItem = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str | None]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ledger_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_entries (
        idx INTEGER PRIMARY KEY,
        entry BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS ledger_tree_heads (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        root_hash BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        key_id BLOB NOT NULL,
        public_key BLOB NOT NULL,
        signature BLOB NOT NULL
    )""",
    "INSERT OR IGNORE INTO ledger_meta (name, value) VALUES ('schema_version', '1')",
]
for _table in ("ledger_entries", "ledger_nodes", "ledger_tree_heads"):
    for _operation in ("UPDATE", "DELETE"):
        _SCHEMA.append(
            f"CREATE TRIGGER IF NOT EXISTS {_table}_no_{_operation.lower()} BEFORE {_operation} ON {_table} "
            f"BEGIN SELECT RAISE(ABORT, '{_table} is append-only'); END"
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One stored entry, decoded."""

    index: int
    kind: str
    actor: str | None
    time: float
    payload: dict[str, Any]
    leaf_hash: bytes


class Ledger:
    """Tamper-evident, append-only log of events in a SQLite database.

    The ledger uses the connection it is given and never closes it, unless it
    was made by :meth:`open`. When the connection is already inside a
    transaction, writes join it through a savepoint and the caller commits.
    Otherwise each write runs in its own ``BEGIN IMMEDIATE`` transaction.
    Several connections, also from other processes, may append to the same
    database because each write rereads the tree state inside its transaction.
    One ``Ledger`` object must not be used from two threads at once.
    """

    def __init__(self, connection: sqlite3.Connection, key_path: str | os.PathLike[str]) -> None:
        self._connection = connection
        self._key_path = Path(key_path)
        self._key: LedgerKey | None = None
        self._owns_connection = False
        caller_transaction = connection.in_transaction
        try:
            for statement in _SCHEMA:
                connection.execute(statement)
            if not caller_transaction:
                connection.commit()
            row = connection.execute("SELECT value FROM ledger_meta WHERE name = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot create the ledger tables: {exc}") from exc
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise LedgerError(f"unsupported ledger schema version {row[0] if row else None!r}, expected {SCHEMA_VERSION}")

    @classmethod
    def open(cls, store_path: str | os.PathLike[str], *, key_path: str | os.PathLike[str] | None = None, create: bool = True) -> Ledger:
        """Open the ledger in the SQLite file ``store_path``, creating the file if ``create`` is true.

        The signing key defaults to :func:`~iotwarden.ledger.keys.ledger_key_path`
        of the store. The returned ledger owns its connection: call
        :meth:`close` or use it as a context manager.
        """
        path = Path(store_path)
        if not create and not path.is_file():
            raise LedgerError(f"store not found: {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=30.0)
            connection.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open store {path}: {exc}") from exc
        try:
            ledger = cls(connection, key_path if key_path is not None else ledger_key_path(path))
        except BaseException:
            connection.close()
            raise
        ledger._owns_connection = True
        return ledger

    def close(self) -> None:
        """Close the connection if :meth:`open` made it."""
        if self._owns_connection:
            self._connection.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- key ---------------------------------------------------------------

    @property
    def key(self) -> LedgerKey:
        """Signing key, loaded or created on first use."""
        if self._key is None:
            self._key = LedgerKey.load_or_create(self._key_path)
        return self._key

    @property
    def key_path(self) -> Path:
        """Path of the signing key file."""
        return self._key_path

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection the ledger uses."""
        return self._connection

    def public_key_pem(self) -> str:
        """Return the public half of the signing key as PEM."""
        return self.key.public_key_pem()

    # --- writing -----------------------------------------------------------

    def append(self, kind: str, payload: dict[str, Any], *, actor: str | None = None) -> int:
        """Append one entry and return its 0-based index. No tree head is signed."""
        return self._append([(kind, payload, actor)], sign=False)[0]

    def append_many(self, items: Iterable[LedgerItem]) -> list[int]:
        """Append entries in one transaction, sign the new tree head and return the indexes.

        Each item is ``(kind, payload)`` or ``(kind, payload, actor)``. Either
        every item is appended or none is. An empty ``items`` writes nothing.
        """
        normalized: list[tuple[str, dict[str, Any], str | None]] = []
        for position, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise InvalidEntryError(f"item {position}: expected (kind, payload) or (kind, payload, actor), got {item!r:.80}")
            normalized.append((item[0], item[1], item[2] if len(item) == 3 else None))
        if not normalized:
            return []
        return self._append(normalized, sign=True)

    def _append(self, items: Sequence[tuple[str, dict[str, Any], str | None]], *, sign: bool) -> list[int]:
        now = time.time()
        with self._write_transaction("append to the ledger"):
            size = self._read_size()
            frontier = self._read_frontier(size)
            entry_rows: list[tuple[int, bytes]] = []
            node_rows: list[tuple[int, int, bytes]] = []
            hash_leaf = merkle.hash_leaf
            hash_children = merkle.hash_children

            for offset, (kind, payload, actor) in enumerate(items):
                index = size + offset
                try:
                    data = encode_entry(index, kind, actor, now, payload)
                except InvalidEntryError as exc:
                    raise InvalidEntryError(f"item {offset}: {exc}") from exc
                node = hash_leaf(data)
                entry_rows.append((index, data))
                node_rows.append((0, index, node))
                # Each set low bit of the index closes a perfect subtree whose
                # left half is waiting in the frontier.
                level = 0
                position = index
                while position & 1:
                    node = hash_children(frontier.pop(level), node)
                    level += 1
                    position >>= 1
                    node_rows.append((level, position, node))
                frontier[level] = node

            self._connection.executemany("INSERT INTO ledger_entries (idx, entry) VALUES (?, ?)", entry_rows)
            self._connection.executemany("INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
            new_size = size + len(items)
            if sign:
                self._store_tree_head(new_size, _root_from_frontier(frontier))
        return list(range(size, new_size))

    def signed_tree_head(self) -> SignedTreeHead:
        """Return a stored signed tree head for the current size, signing and storing one if needed."""
        with self._write_transaction("sign a tree head"):
            size = self._read_size()
            latest = self.latest_tree_head()
            if latest is not None and latest.size == size and latest.key_id == self.key.key_id:
                return latest
            return self._store_tree_head(size, _root_from_frontier(self._read_frontier(size)))

    def checkpoint(self, path: str | os.PathLike[str] | None = None) -> SignedTreeHead:
        """Store a signed tree head for the current size and write it to ``path`` if given.

        Keep checkpoint files where the ledger's writers cannot change them and
        pass one to :meth:`verify` later to prove that the log only grew.
        """
        head = self.signed_tree_head()
        if path is not None:
            write_checkpoint(head, path)
        return head

    def _store_tree_head(self, size: int, root: bytes) -> SignedTreeHead:
        head = self.key.sign_tree_head(size, root, time.time_ns() // 1_000_000)
        self._connection.execute(
            "INSERT INTO ledger_tree_heads (size, root_hash, timestamp_ms, key_id, public_key, signature) VALUES (?, ?, ?, ?, ?, ?)",
            (head.size, head.root_hash, head.timestamp_ms, head.key_id, head.public_key, head.signature),
        )
        return head

    @contextmanager
    def _write_transaction(self, action: str) -> Iterator[None]:
        connection = self._connection
        try:
            if connection.in_transaction:
                connection.execute("SAVEPOINT ledger_write")
                try:
                    yield
                except BaseException:
                    connection.execute("ROLLBACK TO ledger_write")
                    connection.execute("RELEASE ledger_write")
                    raise
                connection.execute("RELEASE ledger_write")
            else:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    connection.rollback()
                    raise
                connection.commit()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot {action}: {exc}") from exc

    # --- reading -----------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of entries in the log."""
        return self._read_size()

    def _read_size(self) -> int:
        row = self._connection.execute("SELECT MAX(idx) FROM ledger_entries").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def _read_frontier(self, size: int) -> dict[int, bytes]:
        # The perfect subtrees that make up a tree of `size` leaves: one per
        # set bit of `size`, keyed by level.
        return {level: self._node(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1}

    def _node(self, level: int, index: int) -> bytes:
        row = self._connection.execute("SELECT hash FROM ledger_nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        if row is None:
            raise LedgerError(f"stored hash missing at level {level}, index {index}; run 'iotwarden ledger verify'")
        return row[0]

    def _check_size(self, size: int | None) -> int:
        current = self._read_size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise LedgerError(f"tree size {size} is out of range: the log has {current} entries")
        return size

    def root_hash(self, size: int | None = None) -> bytes:
        """Return the RFC 9162 root hash of the first ``size`` entries (default: all)."""
        return merkle.root_hash(self._node, self._check_size(size))

    def leaf_hash(self, index: int) -> bytes:
        """Return the stored leaf hash of entry ``index``."""
        self._check_index(index, self._read_size())
        return self._node(0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the audit path that proves entry ``index`` is in the tree of ``size`` entries (default: all)."""
        tree_size = self._check_size(size)
        self._check_index(index, tree_size)
        return merkle.inclusion_path(self._node, index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Return the proof that the tree of ``old_size`` entries is a prefix of the tree of ``new_size``."""
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise LedgerError(f"old size {old_size} must be between 0 and the new size {new_size}")
        return merkle.consistency_path(self._node, old_size, new_size)

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise LedgerError(f"entry {index} not found: the tree has {size} entries")

    def get(self, index: int) -> LedgerEntry:
        """Return entry ``index``, decoded."""
        row = self._connection.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"entry {index} not found: the log has {self._read_size()} entries")
        return _decode_row(index, row[0])

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Yield entries with ``start <= index < stop``, in index order."""
        end = self._read_size() if stop is None else stop
        cursor = self._connection.execute(
            "SELECT idx, entry FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        )
        for index, data in cursor:
            yield _decode_row(index, data)

    def tree_heads(self) -> list[SignedTreeHead]:
        """Return all stored signed tree heads, oldest first."""
        cursor = self._connection.execute(
            "SELECT size, root_hash, timestamp_ms, key_id, public_key, signature FROM ledger_tree_heads ORDER BY id"
        )
        return [_head_from_row(row) for row in cursor]

    def latest_tree_head(self) -> SignedTreeHead | None:
        """Return the most recently stored signed tree head, or None."""
        row = self._connection.execute(
            "SELECT size, root_hash, timestamp_ms, key_id, public_key, signature FROM ledger_tree_heads ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _head_from_row(row)

    # --- verification --------------------------------------------------------

    def verify(self, checkpoint: SignedTreeHead | None = None) -> VerifyReport:
        """Recompute the log from its stored entries and check every stored hash and tree head.

        With ``checkpoint``, also prove that the log still extends it. See
        :func:`~iotwarden.ledger.audit.verify_ledger` for the checks and how
        the first bad index is chosen. Call ``raise_for_failure()`` on the
        report to turn a failure into
        :class:`~iotwarden.ledger.errors.LedgerIntegrityError`.

        Unlike writing, verifying never creates a signing key: with the key
        file missing, any stored tree head or checkpoint fails the check.
        """
        key = self._key
        if key is None and self._key_path.exists():
            key = self.key
        return verify_ledger(self._connection, key, checkpoint, key_path=self._key_path)


def _root_from_frontier(frontier: dict[int, bytes]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    levels = sorted(frontier)
    root = frontier[levels[0]]
    for level in levels[1:]:
        root = merkle.hash_children(frontier[level], root)
    return root


def _decode_row(index: int, data: bytes) -> LedgerEntry:
    try:
        decoded = decode_entry(data)
    except InvalidEntryError as exc:
        raise LedgerError(f"entry {index} is corrupt: {exc}; run 'iotwarden ledger verify'") from exc
    return LedgerEntry(
        index=index,
        kind=decoded.kind,
        actor=decoded.actor,
        time=decoded.time,
        payload=decoded.payload,
        leaf_hash=merkle.hash_leaf(data),
    )


def _head_from_row(row: tuple[Any, ...]) -> SignedTreeHead:
    size, root_hash, timestamp_ms, key_id, public_key, signature = row
    return SignedTreeHead(
        size=size,
        root_hash=bytes(root_hash),
        timestamp_ms=timestamp_ms,
        key_id=bytes(key_id),
        public_key=bytes(public_key),
        signature=bytes(signature),
    )
