"""Full verification of a stored ledger.

:func:`verify_ledger` trusts only the entry bytes in the database and the
signing key file. It checks, in this order:

1. Entries: indexes run 0..n-1 without gaps, each entry is canonical JSON that
   records its own index, and its leaf hash equals the stored leaf hash.
2. Stored subtree hashes: each equals the hash of its two stored children, and
   none lies beyond the end of the log.
3. Stored tree heads, oldest first: signed by this ledger's key, signature
   valid, size not beyond the log, root equal to the root of the entries.
4. The checkpoint, if given: signed by this ledger's key, and the log extends
   it, proven with an RFC 9162 consistency proof checked by
   :func:`~iotwarden.ledger.proofs.verify_consistency`.

The first bad index is the smallest index among all problems found. An entry
or stored hash problem names the entry itself, or the first entry that a bad
subtree hash covers. A stored tree head problem names the first entry that no
earlier valid tree head covers, because a signature can only vouch for the
entries as a whole. Removed entries are named by the first missing index. A
checkpoint that the log no longer extends, without entries missing, gives no
index (None), because a root hash does not show which entry changed.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from iotwarden.ledger import merkle
from iotwarden.ledger.encoding import decode_entry
from iotwarden.ledger.errors import InvalidEntryError, LedgerError, LedgerIntegrityError
from iotwarden.ledger.keys import LedgerKey, SignedTreeHead
from iotwarden.ledger.proofs import verify_consistency

__all__ = ["VerifyReport", "verify_ledger"]

_HASH_SIZE = 32

# Order of problems that name the same index: the most specific first.
_RANK_ENTRY = 0
_RANK_NODE = 1
_RANK_TREE_HEAD = 2
_RANK_CHECKPOINT = 3


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of :func:`verify_ledger`.

    Attributes:
        ok: True when every check passed.
        size: Number of entries in the log (highest stored index + 1).
        signed_size: Largest size covered by a valid stored tree head.
        tree_heads_checked: Number of stored tree heads examined.
        first_bad_index: First bad entry index; None when ``ok`` or when the
            problem is not tied to an entry (see the module docstring).
        reason: One line naming what failed; None when ``ok``.
        checkpoint_size: Size of the checkpoint verified against, if any.
        root_hash: Root hash of all entries, when the entries checked out.
    """

    ok: bool
    size: int
    signed_size: int
    tree_heads_checked: int
    first_bad_index: int | None
    reason: str | None
    checkpoint_size: int | None = None
    root_hash: bytes | None = None

    def summary(self) -> str:
        """Return a one-line description of the result."""
        if not self.ok:
            where = f" at entry {self.first_bad_index}" if self.first_bad_index is not None else ""
            return f"ledger verification failed{where}: {self.reason}"
        parts = [f"ledger intact: {self.size} entries", f"{self.tree_heads_checked} signed tree heads valid"]
        unsigned = self.size - self.signed_size
        if unsigned:
            parts.append(f"last {unsigned} entries not yet covered by a signed tree head")
        if self.checkpoint_size is not None:
            parts.append(f"extends checkpoint at size {self.checkpoint_size}")
        if self.root_hash is not None:
            parts.append(f"root {self.root_hash.hex()}")
        return ", ".join(parts)

    def raise_for_failure(self) -> None:
        """Raise :class:`LedgerIntegrityError` unless the ledger verified."""
        if not self.ok:
            raise LedgerIntegrityError(self.first_bad_index, self.reason or "unknown problem")


class _Problems:
    """The problem with the smallest (index, rank) found so far."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.reason: str | None = None
        self._key: tuple[float, int] | None = None

    def add(self, index: int | None, rank: int, reason: str) -> None:
        key = (math.inf if index is None else index, rank)
        if self._key is None or key < self._key:
            self._key = key
            self.index = index
            self.reason = reason

    @property
    def found(self) -> bool:
        return self._key is not None


class _StoredLevels:
    """All stored subtree hashes of a log of ``size`` entries, level by level."""

    def __init__(self, connection: sqlite3.Connection, size: int, problems: _Problems) -> None:
        self.size = size
        self.hashes: list[bytearray] = []
        self.known: list[bytearray] = []
        for level in range(size.bit_length()):
            count = size >> level
            hashes = bytearray(_HASH_SIZE * count)
            known = bytearray(count)
            cursor = connection.execute(
                "SELECT idx, hash FROM ledger_nodes WHERE level = ? AND idx >= 0 AND idx < ? ORDER BY idx", (level, count)
            )
            for index, value in cursor:
                if not isinstance(value, bytes) or len(value) != _HASH_SIZE:
                    problems.add(index << level, _RANK_NODE, f"stored hash at level {level}, index {index} is malformed")
                    continue
                hashes[_HASH_SIZE * index : _HASH_SIZE * (index + 1)] = value
                known[index] = 1
            self.hashes.append(hashes)
            self.known.append(known)

    def get(self, level: int, index: int) -> bytes:
        if not self.known[level][index]:
            raise KeyError((level, index))
        return bytes(self.hashes[level][_HASH_SIZE * index : _HASH_SIZE * (index + 1)])


def verify_ledger(
    connection: sqlite3.Connection,
    key: LedgerKey | None,
    checkpoint: SignedTreeHead | None = None,
    *,
    key_path: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Verify the ledger stored through ``connection`` against ``key`` and an optional checkpoint.

    ``key`` is the ledger's signing key, or None when its file is missing, in
    which case every tree head and the checkpoint fail. ``key_path`` only
    names the file in that message. The whole check reads one consistent
    snapshot of the database. Memory use is about 64 bytes per entry for the
    stored hashes.
    """
    missing_key = "signing key not found" if key_path is None else f"signing key {key_path} not found"
    try:
        with _read_snapshot(connection):
            return _verify(connection, key, checkpoint, missing_key)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger: {exc}") from exc


@contextmanager
def _read_snapshot(connection: sqlite3.Connection) -> Iterator[None]:
    if connection.in_transaction:
        yield
        return
    connection.execute("BEGIN")
    try:
        yield
    finally:
        connection.rollback()


def _verify(
    connection: sqlite3.Connection, key: LedgerKey | None, checkpoint: SignedTreeHead | None, missing_key: str
) -> VerifyReport:
    problems = _Problems()
    row = connection.execute("SELECT MAX(idx) FROM ledger_entries").fetchone()
    size = 0 if row[0] is None else row[0] + 1

    levels = _StoredLevels(connection, size, problems)
    _check_nodes_beyond_end(connection, size, problems)
    _check_entries(connection, levels, problems)
    _check_parent_hashes(levels, problems)
    entries_bad_from = problems.index if problems.found else None

    def trusted_root(tree_size: int) -> bytes | None:
        # Stored hashes equal recomputed ones only below the first bad index.
        if entries_bad_from is not None and tree_size > entries_bad_from:
            return None
        try:
            return merkle.root_hash(levels.get, tree_size)
        except KeyError:
            return None

    signed_size, heads_checked = _check_tree_heads(connection, key, missing_key, size, trusted_root, problems)
    if checkpoint is not None:
        _check_checkpoint(checkpoint, key, missing_key, size, levels, trusted_root, entries_bad_from, problems)

    return VerifyReport(
        ok=not problems.found,
        size=size,
        signed_size=signed_size,
        tree_heads_checked=heads_checked,
        first_bad_index=problems.index,
        reason=problems.reason,
        checkpoint_size=None if checkpoint is None else checkpoint.size,
        root_hash=trusted_root(size),
    )


def _check_nodes_beyond_end(connection: sqlite3.Connection, size: int, problems: _Problems) -> None:
    row = connection.execute(
        "SELECT level, idx FROM ledger_nodes WHERE level < 0 OR level >= 63 OR idx < 0 OR idx >= (? >> level) "
        "ORDER BY level, idx LIMIT 1",
        (size,),
    ).fetchone()
    if row is not None:
        level, index = row
        problems.add(
            size,
            _RANK_NODE,
            f"stored hash at level {level}, index {index} lies beyond the end of the log ({size} entries): entries were removed from the end",
        )


def _check_entries(connection: sqlite3.Connection, levels: _StoredLevels, problems: _Problems) -> None:
    expected = 0
    bad_from: int | None = None
    for index, data in connection.execute("SELECT idx, entry FROM ledger_entries ORDER BY idx"):
        if index != expected:
            problems.add(expected, _RANK_ENTRY, f"entry is missing (the next stored entry is {index})")
            bad_from = expected
            break
        expected += 1
        problem = _entry_problem(index, data, levels)
        if problem is not None:
            problems.add(index, _RANK_ENTRY, problem)
            bad_from = index
            break
    if bad_from is not None and levels.known:
        # Leaf hashes from the first bad entry on are unchecked, so parent
        # checks must not rely on them.
        known = levels.known[0]
        known[bad_from:] = bytes(len(known) - bad_from)


def _entry_problem(index: int, data: object, levels: _StoredLevels) -> str | None:
    if not isinstance(data, bytes):
        return f"entry is stored as {type(data).__name__}, expected bytes"
    try:
        decoded = decode_entry(data)
    except InvalidEntryError as exc:
        return f"entry content is corrupt: {exc}"
    if decoded.index != index:
        return f"entry records index {decoded.index}: entries were reordered, inserted or deleted"
    if not levels.known[0][index]:
        return "stored leaf hash is missing"

    leaf = merkle.hash_leaf(data)
    stored = levels.get(0, index)
    if leaf == stored:
        return None
    # Tell a changed entry from a changed stored hash: the parent node was
    # computed from the original leaf hash.
    sibling = index ^ 1
    if levels.size >> 1 > index >> 1 and levels.known[0][sibling] and levels.known[1][index >> 1]:
        pair = (leaf, levels.get(0, sibling)) if index % 2 == 0 else (levels.get(0, sibling), leaf)
        if merkle.hash_children(*pair) == levels.get(1, index >> 1):
            return "stored leaf hash was changed (the entry still matches its parent subtree hash)"
    return "entry does not match its stored leaf hash: the entry or the hash was changed"


def _check_parent_hashes(levels: _StoredLevels, problems: _Problems) -> None:
    # Bottom-up. A node is checked only when both children checked out, and a
    # node that fails or cannot be checked counts as unknown for its parent,
    # so one bad hash is reported once, at its own position.
    hash_children = merkle.hash_children
    for level in range(1, len(levels.hashes)):
        children = levels.hashes[level - 1]
        children_known = levels.known[level - 1]
        nodes = levels.hashes[level]
        nodes_known = levels.known[level]
        width = 1 << level
        for index in range(len(nodes_known)):
            left = 2 * index
            if not (children_known[left] and children_known[left + 1]):
                nodes_known[index] = 0
                continue
            first, last = index * width, (index + 1) * width - 1
            if not nodes_known[index]:
                problems.add(first, _RANK_NODE, f"stored hash of entries {first}..{last} (level {level}, index {index}) is missing")
                continue
            expected = hash_children(
                bytes(children[_HASH_SIZE * left : _HASH_SIZE * (left + 1)]),
                bytes(children[_HASH_SIZE * (left + 1) : _HASH_SIZE * (left + 2)]),
            )
            if nodes[_HASH_SIZE * index : _HASH_SIZE * (index + 1)] != expected:
                problems.add(
                    first,
                    _RANK_NODE,
                    f"stored hash of entries {first}..{last} (level {level}, index {index}) does not match its two children",
                )
                nodes_known[index] = 0


def _check_tree_heads(
    connection: sqlite3.Connection,
    key: LedgerKey | None,
    missing_key: str,
    size: int,
    trusted_root: Callable[[int], bytes | None],
    problems: _Problems,
) -> tuple[int, int]:
    covered = 0
    checked = 0
    cursor = connection.execute(
        "SELECT id, size, root_hash, timestamp_ms, key_id, public_key, signature FROM ledger_tree_heads ORDER BY id"
    )
    for head_id, head_size, root, timestamp_ms, key_id, public_key, signature in cursor:
        checked += 1
        label = f"tree head {head_id} (size {head_size})"
        try:
            head = SignedTreeHead(
                size=head_size,
                root_hash=bytes(root),
                timestamp_ms=timestamp_ms,
                key_id=bytes(key_id),
                public_key=bytes(public_key),
                signature=bytes(signature),
            )
        except TypeError:
            problems.add(covered, _RANK_TREE_HEAD, f"{label} is malformed")
            break
        problem_index = covered
        problem: str | None = None
        if not isinstance(head_size, int) or not isinstance(timestamp_ms, int) or head_size < 0 or timestamp_ms < 0:
            problem = f"{label} is malformed"
        elif key is None:
            problem = f"{label} cannot be checked: {missing_key}"
        elif head.key_id != key.key_id:
            problem = f"{label} is signed by another key (key id {head.key_id.hex()[:16]}, expected {key.key_id.hex()[:16]})"
        elif (signature_problem := head.signature_problem()) is not None:
            problem = f"{label}: {signature_problem}"
        elif head_size > size:
            problem_index = size
            problem = f"{label} covers more entries than the log has ({size}): entries were removed from the end"
        else:
            root_now = trusted_root(head_size)
            if root_now is None:
                # An entry problem below head_size already explains a mismatch.
                continue
            if root_now != head.root_hash:
                problem = f"{label} does not match the stored entries: entries from {covered} on were rewritten"
        if problem is not None:
            problems.add(problem_index, _RANK_TREE_HEAD, problem)
            break
        covered = max(covered, head_size)
    return covered, checked


def _check_checkpoint(
    checkpoint: SignedTreeHead,
    key: LedgerKey | None,
    missing_key: str,
    size: int,
    levels: _StoredLevels,
    trusted_root: Callable[[int], bytes | None],
    entries_bad_from: int | None,
    problems: _Problems,
) -> None:
    label = f"checkpoint (size {checkpoint.size})"
    if key is None:
        problems.add(None, _RANK_CHECKPOINT, f"{label} cannot be checked: {missing_key}")
        return
    if checkpoint.key_id != key.key_id:
        problems.add(
            None,
            _RANK_CHECKPOINT,
            f"{label} is signed by another key (key id {checkpoint.key_id.hex()[:16]}, expected {key.key_id.hex()[:16]})",
        )
        return
    signature_problem = checkpoint.signature_problem()
    if signature_problem is not None:
        problems.add(None, _RANK_CHECKPOINT, f"{label}: {signature_problem}")
        return
    if checkpoint.size > size:
        problems.add(size, _RANK_CHECKPOINT, f"the log has {size} entries, fewer than the {label}: it was truncated or rolled back")
        return
    if entries_bad_from is not None and checkpoint.size > entries_bad_from:
        return

    new_root = trusted_root(size)
    if new_root is not None:
        proof = merkle.consistency_path(levels.get, checkpoint.size, size)
        consistent = verify_consistency(checkpoint.size, size, checkpoint.root_hash, new_root, proof)
    else:
        consistent = trusted_root(checkpoint.size) == checkpoint.root_hash
    if not consistent:
        problems.add(None, _RANK_CHECKPOINT, f"the log does not extend the {label}: entries before {checkpoint.size} were rewritten")
