"""Verification of RFC 9162 inclusion and consistency proofs.

These functions follow the verification algorithms of RFC 9162, sections
2.1.3.2 and 2.1.4.2, which walk the proof with bit operations on the leaf
index and tree size. They share no code with :mod:`iotwarden.ledger.merkle`,
which builds the proofs, so a bug in one is unlikely to be hidden by the same
bug in the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["verify_consistency", "verify_inclusion"]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """Return whether ``path`` proves that ``leaf_hash`` is leaf ``index`` of the tree with ``root``.

    Args:
        leaf_hash: ``SHA-256(0x00 || entry)`` of the entry.
        index: 0-based leaf index.
        size: Number of leaves of the tree that ``root`` belongs to.
        path: Audit path, sibling hashes from the leaf up.
        root: Expected root hash.
    """
    if not 0 <= index < size:
        return False
    fn = index
    sn = size - 1
    result = leaf_hash
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = _node(sibling, result)
            if not fn & 1:
                # Skip the levels where the node is the last one and has no
                # sibling: it moves up unchanged until it is a right child.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = _node(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> bool:
    """Return whether ``path`` proves that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size``.

    Equal sizes need an empty proof and equal roots. An old size of 0 needs an
    empty proof and ``old_root == SHA-256("")``, and then any ``new_root`` is
    accepted, since every tree extends the empty tree.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root and (old_size > 0 or old_root == hashlib.sha256(b"").digest())
    if old_size == 0:
        return not path and old_root == hashlib.sha256(b"").digest()
    if not path:
        return False

    hashes = list(path)
    if old_size & (old_size - 1) == 0:
        # A power-of-two old tree is itself a node of the new tree, and the
        # proof leaves it out because the verifier already has it.
        hashes.insert(0, old_root)
    fn = old_size - 1
    sn = new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first_root = second_root = hashes[0]
    for item in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_root = _node(item, first_root)
            second_root = _node(item, second_root)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second_root = _node(second_root, item)
        fn >>= 1
        sn >>= 1
    return sn == 0 and first_root == old_root and second_root == new_root
