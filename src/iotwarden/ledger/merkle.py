"""Merkle tree hashing and proof construction as defined by RFC 9162, section 2.1.

Leaf hash: ``SHA-256(0x00 || entry)``. Interior node: ``SHA-256(0x01 || left ||
right)``. A tree of n > 1 leaves splits at k, the largest power of two smaller
than n: the left subtree contains leaves [0, k) and is always perfect, and the
right one contains [k, n). The root of the empty tree is ``SHA-256("")``.

Every function here reads hashes through a ``NodeLookup``: ``node(level,
index)`` returns the hash of the perfect subtree that covers leaves
``[index * 2**level, (index + 1) * 2**level)``, so level 0 contains the leaf
hashes. Because all left subtrees of the RFC shape are perfect and aligned,
a root, an inclusion proof or a consistency proof needs O(log n) lookups and
O(log n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = [
    "EMPTY_ROOT",
    "NodeLookup",
    "consistency_path",
    "hash_children",
    "hash_leaf",
    "inclusion_path",
    "range_hash",
    "root_hash",
    "split_point",
]

NodeLookup = Callable[[int, int], bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(entry: bytes) -> bytes:
    """Return the RFC 9162 leaf hash of ``entry``."""
    return _sha256(b"\x00" + entry).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash of two child hashes."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """Return the largest power of two smaller than ``n`` (requires n >= 2)."""
    if n < 2:
        raise ValueError(f"split_point needs n >= 2, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(node: NodeLookup, start: int, end: int) -> bytes:
    """Return the RFC 9162 hash of leaves [start, end).

    ``start`` must be a multiple of the largest power of two not above
    ``end - start``, which holds for every subtree of the RFC tree shape. The
    range is cut into perfect subtrees, largest first, and folded from the
    right.
    """
    if end <= start:
        raise ValueError(f"empty or reversed range [{start}, {end})")
    pieces: list[bytes] = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            pieces.append(node(level, position >> level))
            position += 1 << level
    result = pieces[-1]
    for piece in reversed(pieces[:-1]):
        result = hash_children(piece, result)
    return result


def root_hash(node: NodeLookup, size: int) -> bytes:
    """Return the root hash of the tree of the first ``size`` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return range_hash(node, 0, size)


def inclusion_path(node: NodeLookup, index: int, size: int) -> list[bytes]:
    """Return the RFC 9162 inclusion proof (audit path) of leaf ``index`` in a tree of ``size`` leaves.

    The path lists sibling hashes from the leaf up to the root.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + split_point(end - start)
        if index < middle:
            siblings.append(range_hash(node, middle, end))
            end = middle
        else:
            siblings.append(range_hash(node, start, middle))
            start = middle
    siblings.reverse()
    return siblings


def consistency_path(node: NodeLookup, old_size: int, new_size: int) -> list[bytes]:
    """Return the RFC 9162 consistency proof between trees of ``old_size`` and ``new_size`` leaves.

    The proof is empty when ``old_size`` is 0 or equals ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"consistency proof needs 0 <= old size <= new size, got {old_size} and {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    # Iterative form of SUBPROOF(m, D[start:end], b): the recursion only ever
    # descends into one side, so the collected hashes are reversed at the end.
    proof: list[bytes] = []
    start, end = 0, new_size
    remaining = old_size
    old_tree_is_whole_subtree = True
    while True:
        if remaining == end - start:
            if not old_tree_is_whole_subtree:
                proof.append(range_hash(node, start, end))
            break
        middle = start + split_point(end - start)
        if remaining <= middle - start:
            proof.append(range_hash(node, middle, end))
            end = middle
        else:
            proof.append(range_hash(node, start, middle))
            remaining -= middle - start
            start = middle
            old_tree_is_whole_subtree = False
    proof.reverse()
    return proof
