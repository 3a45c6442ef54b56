"""Tests of the ledger: appending, signing, verification, tampering and the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotwarden.errors import IotwardenError
from iotwarden.ledger import (
    EMPTY_ROOT,
    InvalidEntryError,
    Ledger,
    LedgerError,
    LedgerIntegrityError,
    LedgerKey,
    canonical_json,
    decode_entry,
    encode_entry,
    hash_children,
    hash_leaf,
    key_id_of,
    ledger_key_path,
    read_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from iotwarden.ledger.cli import ledger as ledger_group

# Three signed batches of 10 (tree heads at sizes 10, 20, 30), then 5 single
# appends that no tree head covers yet.
BATCHES = 3
BATCH_SIZE = 10
SINGLES = 5
LOG_SIZE = BATCHES * BATCH_SIZE + SINGLES


def alert(number: int) -> dict:
    return {"device": f"sensor-{number:03d}", "score": 4.5 + number, "metric": "temperature"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.db"
    with Ledger.open(path) as log:
        for batch in range(BATCHES):
            log.append_many([("alert", alert(batch * BATCH_SIZE + i), "engine") for i in range(BATCH_SIZE)])
        for i in range(SINGLES):
            log.append("decision", {"alert": i, "action": "quarantine"}, actor="operator")
    return path


def verify_store(path: Path, checkpoint=None):
    with Ledger.open(path, create=False) as log:
        return log.verify(checkpoint)


def tamper(path: Path, *statements: tuple[str, tuple]) -> None:
    """Edit the store directly, as someone with write access to the file would."""
    connection = sqlite3.connect(path)
    for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        connection.execute(f"DROP TRIGGER {name}")
    for sql, parameters in statements:
        connection.execute(sql, parameters)
    connection.commit()
    connection.close()


def read_entry(path: Path, index: int) -> bytes:
    connection = sqlite3.connect(path)
    (data,) = connection.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (index,)).fetchone()
    connection.close()
    return data


def flip_byte(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def assert_fails_at(path: Path, index: int | None, reason_part: str, checkpoint=None) -> None:
    report = verify_store(path, checkpoint)
    assert not report.ok
    assert report.first_bad_index == index, report.reason
    assert reason_part in report.reason


# --- encoding ------------------------------------------------------------------


def test_canonical_json_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1.5, "é", None, True]}) == '{"a":[1.5,"é",null,true],"b":1}'.encode()


@pytest.mark.parametrize(
    "payload",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": [-math.inf]},
        {1: "int key"},
        {"nested": {None: 1}},
        {"x": object()},
        {"x": b"bytes"},
        {"x": "\ud800"},
    ],
)
def test_canonical_json_rejects_unsupported(payload):
    with pytest.raises(InvalidEntryError):
        canonical_json(payload)


def test_decode_entry_round_trip():
    data = encode_entry(7, "alert", None, 1700000000.25, {"z": 1, "a": {"k": [1, 2]}})
    decoded = decode_entry(data)
    assert decoded.index == 7
    assert decoded.kind == "alert"
    assert decoded.actor is None
    assert decoded.time == 1700000000.25
    assert decoded.payload == {"z": 1, "a": {"k": [1, 2]}}


@pytest.mark.parametrize(
    "data",
    [
        b'{"actor":null,"index":0,"kind":"a","payload":{},"time":1.0} ',
        b'{"index":0,"actor":null,"kind":"a","payload":{},"time":1.0}',
        b'{"actor":null,"index":0,"kind":"a","payload":{},"time":NaN}',
        b'{"actor":null,"index":0,"kind":"","payload":{},"time":1.0}',
        b'{"actor":null,"index":0,"kind":"a","payload":[],"time":1.0}',
        b'{"actor":null,"index":0,"kind":"a","payload":{}}',
        b"\xff",
    ],
)
def test_decode_entry_rejects_noncanonical(data):
    with pytest.raises(InvalidEntryError):
        decode_entry(data)


# --- appending and reading -----------------------------------------------------


def test_append_returns_consecutive_indexes(tmp_path):
    with Ledger.open(tmp_path / "s.db") as log:
        assert log.size == 0
        assert log.root_hash() == EMPTY_ROOT
        assert log.append("alert", {"n": 0}) == 0
        assert log.append_many([("alert", {"n": 1}), ("alert", {"n": 2}, "me")]) == [1, 2]
        assert log.append_many([]) == []
        assert log.size == 3
        entry = log.get(2)
        assert entry.kind == "alert"
        assert entry.actor == "me"
        assert entry.payload == {"n": 2}
        assert entry.leaf_hash == log.leaf_hash(2)
        assert [e.index for e in log.entries(1)] == [1, 2]


def test_append_many_is_atomic(tmp_path):
    with Ledger.open(tmp_path / "s.db") as log:
        log.append("alert", {"n": 0})
        with pytest.raises(InvalidEntryError, match="item 1"):
            log.append_many([("alert", {"n": 1}), ("alert", {"bad": math.nan}), ("alert", {"n": 3})])
        assert log.size == 1
        assert log.tree_heads() == []
        assert log.verify().ok


def test_append_rejects_bad_items(tmp_path):
    with Ledger.open(tmp_path / "s.db") as log:
        with pytest.raises(InvalidEntryError):
            log.append("", {})
        with pytest.raises(InvalidEntryError):
            log.append("alert", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(InvalidEntryError):
            log.append("alert", {}, actor=5)  # type: ignore[arg-type]
        with pytest.raises(InvalidEntryError):
            log.append_many([("alert",)])  # type: ignore[list-item]
        assert log.size == 0


def test_append_many_signs_tree_head(tmp_path):
    with Ledger.open(tmp_path / "s.db") as log:
        log.append("alert", {"n": 0})
        assert log.latest_tree_head() is None
        log.append_many([("alert", {"n": i}) for i in range(1, 6)])
        head = log.latest_tree_head()
        assert head.size == 6
        assert head.root_hash == log.root_hash()
        assert head.key_id == log.key.key_id
        assert head.signature_problem() is None


def test_signed_tree_head_reuses_current_head(tmp_path):
    with Ledger.open(tmp_path / "s.db") as log:
        log.append_many([("alert", {"n": 1})])
        first = log.signed_tree_head()
        assert log.signed_tree_head() == first
        assert len(log.tree_heads()) == 1
        log.append("alert", {"n": 2})
        second = log.signed_tree_head()
        assert second.size == 2
        assert len(log.tree_heads()) == 2


def test_triggers_block_update_and_delete(store):
    connection = sqlite3.connect(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE ledger_entries SET entry = x'00' WHERE idx = 0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM ledger_nodes")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM ledger_tree_heads")
    connection.close()


def test_shared_connection_joins_caller_transaction(tmp_path):
    connection = sqlite3.connect(tmp_path / "store.db")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE alerts (id INTEGER PRIMARY KEY, body TEXT)")
    log = Ledger(connection, ledger_key_path(tmp_path / "store.db"))
    log.append("alert", {"n": 0})

    connection.execute("INSERT INTO alerts (body) VALUES ('rolled back')")
    log.append_many([("alert", {"n": 1})])
    connection.rollback()
    assert log.size == 1
    assert connection.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 0

    connection.execute("INSERT INTO alerts (body) VALUES ('kept')")
    log.append_many([("alert", {"n": 2})])
    connection.commit()
    assert log.size == 2
    assert log.verify().ok
    connection.close()


def test_two_connections_append_alternately(tmp_path):
    path = tmp_path / "s.db"
    with Ledger.open(path) as first, Ledger.open(path) as second:
        for n in range(20):
            (first if n % 3 else second).append("alert", {"n": n})
        second.append_many([("alert", {"n": 20})])
        assert first.size == 21
        report = first.verify()
    assert report.ok, report.reason
    assert report.signed_size == 21


def test_proofs_verify(store):
    with Ledger.open(store) as log:
        size = log.size
        root = log.root_hash()
        for index in range(size):
            assert verify_inclusion(log.leaf_hash(index), index, size, log.inclusion_proof(index), root)
        for old in range(size + 1):
            proof = log.consistency_proof(old, size)
            assert verify_consistency(old, size, log.root_hash(old), root, proof)
        with pytest.raises(LedgerError, match="not found"):
            log.inclusion_proof(size)
        with pytest.raises(LedgerError, match="out of range"):
            log.root_hash(size + 1)
        with pytest.raises(LedgerError):
            log.consistency_proof(5, 3)


# --- key -------------------------------------------------------------------------


def test_key_created_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "ledger-key.pem"
    key = LedgerKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.key_id == hashlib.sha256(key.public_key).digest()
    assert key_id_of(key.public_key) == key.key_id
    assert "BEGIN PUBLIC KEY" in key.public_key_pem()
    again = LedgerKey.load_or_create(path)
    assert again.key_id == key.key_id


def test_key_beside_store(tmp_path):
    with Ledger.open(tmp_path / "alerts.db") as log:
        log.append_many([("alert", {})])
    assert (tmp_path / "alerts.ledger-key.pem").is_file()


def test_invalid_key_file_raises(tmp_path):
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    with pytest.raises(LedgerError, match="invalid ledger signing key"):
        LedgerKey.load_or_create(path)


# --- verification of an intact log -----------------------------------------------


def test_verify_intact_log(store):
    report = verify_store(store)
    assert report.ok, report.reason
    assert report.size == LOG_SIZE
    assert report.signed_size == BATCHES * BATCH_SIZE
    assert report.tree_heads_checked == BATCHES
    assert report.first_bad_index is None
    assert "ledger intact: 35 entries" in report.summary()
    report.raise_for_failure()


def test_verify_against_checkpoint(store, tmp_path):
    with Ledger.open(store) as log:
        checkpoint = log.checkpoint(tmp_path / "cp.json")
        log.append_many([("alert", alert(n)) for n in range(40, 47)])
    loaded = read_checkpoint(tmp_path / "cp.json")
    assert loaded == checkpoint
    report = verify_store(store, loaded)
    assert report.ok, report.reason
    assert report.checkpoint_size == LOG_SIZE


# --- tampering ---------------------------------------------------------------------


def test_flipped_byte_in_entry_content(store):
    data = read_entry(store, 13)
    position = data.index(b"sensor-013") + len("sensor-01")  # keeps valid JSON: "3" becomes "2"
    tamper(store, ("UPDATE ledger_entries SET entry = ? WHERE idx = 13", (flip_byte(data, position),)))
    assert_fails_at(store, 13, "does not match its stored leaf hash")


def test_flipped_byte_breaking_json(store):
    data = read_entry(store, 22)
    tamper(store, ("UPDATE ledger_entries SET entry = ? WHERE idx = 22", (flip_byte(data, 0),)))
    assert_fails_at(store, 22, "corrupt")


def test_flipped_byte_in_stored_leaf_hash(store):
    connection = sqlite3.connect(store)
    (stored,) = connection.execute("SELECT hash FROM ledger_nodes WHERE level = 0 AND idx = 13").fetchone()
    connection.close()
    tamper(store, ("UPDATE ledger_nodes SET hash = ? WHERE level = 0 AND idx = 13", (flip_byte(stored, 5),)))
    assert_fails_at(store, 13, "stored leaf hash was changed")


def test_flipped_byte_in_stored_subtree_hash(store):
    connection = sqlite3.connect(store)
    (stored,) = connection.execute("SELECT hash FROM ledger_nodes WHERE level = 2 AND idx = 3").fetchone()
    connection.close()
    tamper(store, ("UPDATE ledger_nodes SET hash = ? WHERE level = 2 AND idx = 3", (flip_byte(stored, 31),)))
    assert_fails_at(store, 12, "entries 12..15 (level 2, index 3) does not match its two children")


def test_flipped_byte_in_tree_head_root(store):
    tamper(store, ("UPDATE ledger_tree_heads SET root_hash = ? WHERE size = 20", (bytes(32),)))
    # The signature covers the root, so the changed head fails its signature
    # check. Entries from 10 on are then not covered by a valid head.
    assert_fails_at(store, 10, "tree head 2 (size 20): signature is invalid")


def test_deleted_entry(store):
    tamper(store, ("DELETE FROM ledger_entries WHERE idx = 17", ()))
    assert_fails_at(store, 17, "entry is missing")


def test_deleted_entry_with_renumbering(store):
    tamper(
        store,
        ("DELETE FROM ledger_entries WHERE idx = 17", ()),
        ("UPDATE ledger_entries SET idx = -idx WHERE idx > 17", ()),
        ("UPDATE ledger_entries SET idx = -idx - 1 WHERE idx < 0", ()),
    )
    assert_fails_at(store, 17, "records index 18")


def test_reordered_entries(store):
    first, second = read_entry(store, 13), read_entry(store, 21)
    tamper(
        store,
        ("UPDATE ledger_entries SET entry = ? WHERE idx = 13", (second,)),
        ("UPDATE ledger_entries SET entry = ? WHERE idx = 21", (first,)),
    )
    assert_fails_at(store, 13, "records index 21")


def test_reordered_entries_and_leaf_hashes(store):
    first, second = read_entry(store, 13), read_entry(store, 21)
    tamper(
        store,
        ("UPDATE ledger_entries SET entry = ? WHERE idx = 13", (second,)),
        ("UPDATE ledger_entries SET entry = ? WHERE idx = 21", (first,)),
        ("UPDATE ledger_nodes SET hash = ? WHERE level = 0 AND idx = 13", (hash_leaf(second),)),
        ("UPDATE ledger_nodes SET hash = ? WHERE level = 0 AND idx = 21", (hash_leaf(first),)),
    )
    assert_fails_at(store, 13, "records index 21")


@pytest.mark.parametrize("position", [12, 13])
def test_inserted_entry(store, position):
    forged = encode_entry(position, "alert", "engine", 1700000000.0, {"device": "sensor-999", "score": 0.1})
    tamper(
        store,
        ("UPDATE ledger_entries SET idx = -idx WHERE idx >= ?", (position,)),
        ("UPDATE ledger_entries SET idx = -idx + 1 WHERE idx <= ?", (-position,)),
        ("INSERT INTO ledger_entries (idx, entry) VALUES (?, ?)", (position, forged)),
    )
    assert_fails_at(store, position, "does not match its stored leaf hash")


def test_truncated_log(store):
    tamper(store, ("DELETE FROM ledger_entries WHERE idx >= 25", ()))
    assert_fails_at(store, 25, "entries were removed from the end")


def test_truncated_log_with_hashes_removed(store):
    # Nodes and entries beyond 25 are gone, but the tree head at size 30 remains.
    tamper(
        store,
        ("DELETE FROM ledger_entries WHERE idx >= 25", ()),
        ("DELETE FROM ledger_nodes WHERE (idx + 1) << level > 25", ()),
    )
    assert_fails_at(store, 25, "tree head 3 (size 30) covers more entries than the log has (25)")


def test_forged_signature(store):
    connection = sqlite3.connect(store)
    (signature,) = connection.execute("SELECT signature FROM ledger_tree_heads WHERE size = 20").fetchone()
    connection.close()
    tamper(store, ("UPDATE ledger_tree_heads SET signature = ? WHERE size = 20", (flip_byte(signature, 0),)))
    assert_fails_at(store, 10, "tree head 2 (size 20): signature is invalid")


def test_tree_head_from_another_key(store, tmp_path):
    with Ledger.open(store) as log:
        root = log.root_hash(20)
    other = LedgerKey.load_or_create(tmp_path / "other-key.pem")
    forged = other.sign_tree_head(20, root, 1700000000000)
    tamper(
        store,
        (
            "UPDATE ledger_tree_heads SET key_id = ?, public_key = ?, signature = ?, timestamp_ms = ? WHERE size = 20",
            (forged.key_id, forged.public_key, forged.signature, forged.timestamp_ms),
        ),
    )
    assert_fails_at(store, 10, "tree head 2 (size 20) is signed by another key")


def test_signature_from_another_key(store, tmp_path):
    with Ledger.open(store) as log:
        head = log.tree_heads()[1]
    other = LedgerKey.load_or_create(tmp_path / "other-key.pem")
    forged = other.sign_tree_head(head.size, head.root_hash, head.timestamp_ms)
    tamper(store, ("UPDATE ledger_tree_heads SET signature = ? WHERE size = 20", (forged.signature,)))
    assert_fails_at(store, 10, "signature is invalid")


def test_replaced_signing_key(store):
    key_path = ledger_key_path(store)
    key_path.unlink()
    LedgerKey.load_or_create(key_path)
    assert_fails_at(store, 0, "tree head 1 (size 10) is signed by another key")


def test_missing_signing_key(store):
    key_path = ledger_key_path(store)
    key_path.unlink()
    assert_fails_at(store, 0, f"tree head 1 (size 10) cannot be checked: signing key {key_path} not found")
    assert not key_path.exists()


def test_rewritten_log_caught_by_tree_head(store):
    # Entry 15 and every hash above it are recomputed consistently, so only
    # the signed tree heads still hold the old root.
    with Ledger.open(store) as log:
        original = log.get(15)
    forged = encode_entry(15, original.kind, original.actor, original.time, {**original.payload, "score": 0.0})
    connection = sqlite3.connect(store)
    entries = [data for (data,) in connection.execute("SELECT entry FROM ledger_entries ORDER BY idx")]
    connection.close()
    entries[15] = forged

    nodes = []
    level_hashes = [hash_leaf(data) for data in entries]
    level = 0
    while level_hashes:
        nodes += [(level, index, node) for index, node in enumerate(level_hashes)]
        level_hashes = [hash_children(level_hashes[i], level_hashes[i + 1]) for i in range(0, len(level_hashes) - 1, 2)]
        level += 1
    tamper(
        store,
        ("UPDATE ledger_entries SET entry = ? WHERE idx = 15", (forged,)),
        ("DELETE FROM ledger_nodes", ()),
        *[("INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)", node) for node in nodes],
    )
    assert_fails_at(store, 10, "tree head 2 (size 20) does not match the stored entries")


def test_rolled_back_behind_checkpoint(store, tmp_path):
    with Ledger.open(store) as log:
        checkpoint = log.checkpoint(tmp_path / "cp.json")
    # Remove everything after entry 24, including hashes and tree heads, so
    # the log is self-consistent and only the checkpoint shows the loss.
    tamper(
        store,
        ("DELETE FROM ledger_entries WHERE idx >= 25", ()),
        ("DELETE FROM ledger_nodes WHERE (idx + 1) << level > 25", ()),
        ("DELETE FROM ledger_tree_heads WHERE size > 25", ()),
    )
    assert verify_store(store).ok
    assert_fails_at(store, 25, "truncated or rolled back", read_checkpoint(tmp_path / "cp.json"))
    assert checkpoint.size == LOG_SIZE


def test_rolled_back_and_regrown_behind_checkpoint(store, tmp_path):
    with Ledger.open(store) as log:
        log.checkpoint(tmp_path / "cp.json")
    tamper(
        store,
        ("DELETE FROM ledger_entries WHERE idx >= 25", ()),
        ("DELETE FROM ledger_nodes WHERE (idx + 1) << level > 25", ()),
        ("DELETE FROM ledger_tree_heads WHERE size > 25", ()),
    )
    # Someone with the signing key appends different entries past the old size.
    with Ledger.open(store) as log:
        log.append_many([("alert", alert(100 + n), "intruder") for n in range(20)])
    assert verify_store(store).ok
    assert_fails_at(store, None, "does not extend the checkpoint", read_checkpoint(tmp_path / "cp.json"))


def test_checkpoint_from_another_log(store, tmp_path):
    with Ledger.open(tmp_path / "other.db") as other:
        other.append_many([("alert", {"n": 1})])
        foreign = other.checkpoint()
    assert_fails_at(store, None, "checkpoint (size 1) is signed by another key", foreign)


def test_checkpoint_with_forged_signature(store, tmp_path):
    with Ledger.open(store) as log:
        log.checkpoint(tmp_path / "cp.json")
    document = json.loads((tmp_path / "cp.json").read_text())
    document["size"] = 3
    (tmp_path / "cp.json").write_text(json.dumps(document))
    assert_fails_at(store, None, "signature is invalid", read_checkpoint(tmp_path / "cp.json"))


def test_raise_for_failure(store):
    tamper(store, ("DELETE FROM ledger_entries WHERE idx = 4", ()))
    report = verify_store(store)
    with pytest.raises(LedgerIntegrityError) as caught:
        report.raise_for_failure()
    assert caught.value.index == 4
    assert "entry 4" in str(caught.value)
    assert isinstance(caught.value, IotwardenError)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"format": "other"}', '{"format": "iotwarden-ledger-checkpoint/1", "size": "3"}'],
)
def test_read_checkpoint_rejects_invalid(tmp_path, text):
    path = tmp_path / "cp.json"
    path.write_text(text)
    with pytest.raises(LedgerError, match="invalid checkpoint"):
        read_checkpoint(path)


# --- command line --------------------------------------------------------------------


def test_cli_verify_intact(store):
    result = CliRunner().invoke(ledger_group, ["verify", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith("ledger intact: 35 entries")


def test_cli_verify_tampered(store):
    tamper(store, ("DELETE FROM ledger_entries WHERE idx = 9", ()))
    result = CliRunner().invoke(ledger_group, ["verify", "--store", str(store)])
    assert result.exit_code == 1
    assert "failed at entry 9: entry is missing" in result.output


def test_cli_checkpoint_then_verify(store, tmp_path):
    out = tmp_path / "cp.json"
    runner = CliRunner()
    result = runner.invoke(ledger_group, ["checkpoint", "--out", str(out), "--store", str(store)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["size"] == LOG_SIZE
    assert "BEGIN PUBLIC KEY" in document["public_key"]

    result = runner.invoke(ledger_group, ["verify", "--store", str(store), "--checkpoint", str(out)])
    assert result.exit_code == 0, result.output
    assert "extends checkpoint at size 35" in result.output


def test_cli_proof(store):
    result = CliRunner().invoke(ledger_group, ["proof", "13", "--store", str(store)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["index"] == 13
    assert document["tree_size"] == LOG_SIZE
    path = [bytes.fromhex(node) for node in document["audit_path"]]
    assert verify_inclusion(
        bytes.fromhex(document["leaf_hash"]), 13, LOG_SIZE, path, bytes.fromhex(document["root_hash"])
    )


def test_cli_proof_unknown_entry(store):
    result = CliRunner().invoke(ledger_group, ["proof", "99", "--store", str(store)])
    assert isinstance(result.exception, LedgerError)
    assert "entry 99 not found" in str(result.exception)


def test_cli_export_key(store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(ledger_group, ["export-key", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("-----BEGIN PUBLIC KEY-----")
    out = tmp_path / "public.pem"
    result = runner.invoke(ledger_group, ["export-key", "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == LedgerKey.load_or_create(ledger_key_path(store)).public_key_pem()


def test_cli_missing_store(tmp_path):
    result = CliRunner().invoke(ledger_group, ["verify", "--store", str(tmp_path / "absent.db")])
    assert isinstance(result.exception, LedgerError)
    assert "store not found" in str(result.exception)
    assert not (tmp_path / "absent.db").exists()


def test_cli_default_store(isolated_home):
    with Ledger.open(isolated_home / "iotwarden.db") as log:
        log.append_many([("alert", {"n": 1})])
    result = CliRunner().invoke(ledger_group, ["verify"])
    assert result.exit_code == 0, result.output
    assert "1 entries" in result.output
