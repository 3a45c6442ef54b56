"""Property tests of Merkle roots and proofs against a recursive reference of RFC 9162."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotwarden.ledger import Ledger, verify_consistency, verify_inclusion
from iotwarden.ledger import merkle

MAX_SIZE = 300

# The autouse fixture in conftest.py only sets IOTWARDEN_HOME; sharing it
# across Hypothesis examples is harmless.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- reference: the recursive definitions of RFC 9162, section 2.1 --------------


def ref_leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return ref_leaf(entries[0])
    k = ref_split(n)
    return ref_node(ref_mth(entries[:k]), ref_mth(entries[k:]))


def ref_path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return ref_path(m, entries[:k]) + [ref_mth(entries[k:])]
    return ref_path(m - k, entries[k:]) + [ref_mth(entries[:k])]


def ref_subproof(m: int, entries: list[bytes], complete: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if complete else [ref_mth(entries)]
    k = ref_split(n)
    if m <= k:
        return ref_subproof(m, entries[:k], complete) + [ref_mth(entries[k:])]
    return ref_subproof(m - k, entries[k:], False) + [ref_mth(entries[:k])]


def ref_proof(m: int, entries: list[bytes]) -> list[bytes]:
    return ref_subproof(m, entries, True)


# --- shared ledger --------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled_ledger(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ledger-proofs")
    connection = sqlite3.connect(":memory:")
    log = Ledger(connection, directory / "key.pem")
    log.append_many([("alert", {"n": n}) for n in range(MAX_SIZE // 2)])
    for n in range(MAX_SIZE // 2, MAX_SIZE):
        log.append("alert", {"n": n})
    entries = [data for (data,) in connection.execute("SELECT entry FROM ledger_entries ORDER BY idx")]
    yield log, entries
    connection.close()


@st.composite
def size_and_index(draw):
    size = draw(st.integers(min_value=1, max_value=MAX_SIZE))
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def two_sizes(draw):
    new = draw(st.integers(min_value=0, max_value=MAX_SIZE))
    return draw(st.integers(min_value=0, max_value=new)), new


def flip(proof: list[bytes], position: int) -> list[bytes]:
    changed = list(proof)
    node = bytearray(changed[position])
    node[0] ^= 0x80
    changed[position] = bytes(node)
    return changed


# --- reference vectors ---------------------------------------------------------------------

# Leaf inputs and roots for sizes 0..8 from transparency-dev/merkle,
# testonly/constants.go (the Certificate Transparency test vectors).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def reference_lookup(entries: list[bytes]):
    def node(level: int, index: int) -> bytes:
        return ref_mth(entries[index << level : (index + 1) << level])

    return node


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_root_matches_ct_vectors(size):
    entries = CT_LEAVES[:size]
    assert ref_mth(entries).hex() == CT_ROOTS[size]
    assert merkle.root_hash(reference_lookup(entries), size).hex() == CT_ROOTS[size]


def test_proofs_match_ct_vectors():
    lookup = reference_lookup(CT_LEAVES)
    root8 = bytes.fromhex(CT_ROOTS[8])
    path = merkle.inclusion_path(lookup, 5, 8)
    assert [p.hex()[:8] for p in path] == ["bc1a0643", "ca854ea1", "d37ee418"]
    assert verify_inclusion(ref_leaf(CT_LEAVES[5]), 5, 8, path, root8)
    proof = merkle.consistency_path(lookup, 6, 8)
    assert [p.hex()[:8] for p in proof] == ["0ebc5d34", "ca854ea1", "d37ee418"]
    assert verify_consistency(6, 8, bytes.fromhex(CT_ROOTS[6]), root8, proof)


# --- properties ------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(size_and_index())
def test_inclusion_proof_matches_reference(filled_ledger, case):
    log, entries = filled_ledger
    size, index = case
    proof = log.inclusion_proof(index, size)
    root = log.root_hash(size)

    assert root == ref_mth(entries[:size])
    assert proof == ref_path(index, entries[:size])
    assert verify_inclusion(ref_leaf(entries[index]), index, size, proof, root)


@PROPERTY_SETTINGS
@given(size_and_index(), st.data())
def test_inclusion_proof_rejects_changes(filled_ledger, case, data):
    log, entries = filled_ledger
    size, index = case
    proof = log.inclusion_proof(index, size)
    root = log.root_hash(size)
    leaf = ref_leaf(entries[index])

    assert not verify_inclusion(ref_leaf(b"other"), index, size, proof, root)
    assert not verify_inclusion(leaf, index, size, proof, ref_leaf(b"other"))
    assert not verify_inclusion(leaf, index, size, proof + [root], root)
    assert not verify_inclusion(leaf, size, size, proof, root)
    if proof:
        position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        assert not verify_inclusion(leaf, index, size, flip(proof, position), root)
        assert not verify_inclusion(leaf, index, size, proof[:-1], root)
    if size > 1:
        other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index))
        assert not verify_inclusion(leaf, other, size, proof, root)


@PROPERTY_SETTINGS
@given(two_sizes())
def test_consistency_proof_matches_reference(filled_ledger, sizes):
    log, entries = filled_ledger
    old, new = sizes
    proof = log.consistency_proof(old, new)
    old_root = log.root_hash(old)
    new_root = log.root_hash(new)

    assert old_root == ref_mth(entries[:old])
    assert proof == (ref_proof(old, entries[:new]) if old else [])
    assert verify_consistency(old, new, old_root, new_root, proof)


@PROPERTY_SETTINGS
@given(two_sizes(), st.data())
def test_consistency_proof_rejects_changes(filled_ledger, sizes, data):
    log, entries = filled_ledger
    old, new = sizes
    proof = log.consistency_proof(old, new)
    old_root = log.root_hash(old)
    new_root = log.root_hash(new)
    other_root = ref_leaf(b"other")

    assert not verify_consistency(old, new, other_root, new_root, proof)
    if old > 0 or new == 0:
        # Every tree extends the empty tree, so old size 0 accepts any new root.
        assert not verify_consistency(old, new, old_root, other_root, proof)
    assert not verify_consistency(new, old, old_root, new_root, proof) or old == new
    if proof:
        position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        assert not verify_consistency(old, new, old_root, new_root, flip(proof, position))
        assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
    if 0 < old < new - 1:
        # The same proof must not pass for a neighbouring new size.
        assert not verify_consistency(old, new - 1, old_root, log.root_hash(new - 1), proof)


@PROPERTY_SETTINGS
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=64), st.data())
def test_merkle_functions_on_arbitrary_leaves(leaves, data):
    lookup = reference_lookup(leaves)
    size = len(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=1, max_value=size))
    root = ref_mth(leaves)

    assert merkle.root_hash(lookup, size) == root
    assert merkle.inclusion_path(lookup, index, size) == ref_path(index, leaves)
    assert merkle.consistency_path(lookup, old, size) == ref_proof(old, leaves)
    assert verify_consistency(old, size, ref_mth(leaves[:old]), root, ref_proof(old, leaves))
