"""Tamper-evident ledger of alerts and decisions.

An append-only Merkle tree log (RFC 9162 hashing and tree shape) stored in
SQLite, usually in the same file as the alerts, with tree heads signed by an
Ed25519 key. Entries are canonical JSON, described in
:mod:`iotwarden.ledger.encoding`. :meth:`Ledger.verify` recomputes the tree
from the stored entries and names the first bad entry.

Typical use::

    with Ledger.open(store_path) as ledger:
        ledger.append_many([("alert", {"device": "pump-7", "score": 9.1})])
        head = ledger.checkpoint("checkpoint.json")
        ledger.verify(head).raise_for_failure()
"""

from iotwarden.ledger.audit import VerifyReport, verify_ledger
from iotwarden.ledger.encoding import canonical_json, decode_entry, encode_entry
from iotwarden.ledger.errors import InvalidEntryError, LedgerError, LedgerIntegrityError
from iotwarden.ledger.keys import (
    LedgerKey,
    SignedTreeHead,
    key_id_of,
    ledger_key_path,
    read_checkpoint,
    write_checkpoint,
)
from iotwarden.ledger.log import Ledger, LedgerEntry, LedgerItem
from iotwarden.ledger.merkle import EMPTY_ROOT, hash_children, hash_leaf
from iotwarden.ledger.proofs import verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "InvalidEntryError",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerIntegrityError",
    "LedgerItem",
    "LedgerKey",
    "SignedTreeHead",
    "VerifyReport",
    "canonical_json",
    "decode_entry",
    "encode_entry",
    "hash_children",
    "hash_leaf",
    "key_id_of",
    "ledger_key_path",
    "read_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_ledger",
    "write_checkpoint",
]
