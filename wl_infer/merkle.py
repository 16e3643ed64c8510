"""Merkle batches for anchoring many results in one transaction.

A leaf node is ``keccak256(0x00 || leaf)``, an inner node ``keccak256(0x01 || min(a, b) || max(a, b))``
(sorted pair, so a proof is just the sibling list), and an odd node at the end of a level is promoted
unchanged. The prefixes keep leaves and inner nodes apart.
"""

from __future__ import annotations

from collections.abc import Sequence


def _keccak(data: bytes) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(data))


def _leaf_node(leaf: bytes) -> bytes:
    return _keccak(b"\x00" + leaf)


def _inner(a: bytes, b: bytes) -> bytes:
    return _keccak(b"\x01" + min(a, b) + max(a, b))


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and, for each leaf in order, its inclusion proof (the sibling hashes, bottom up)."""
    if not leaves:
        raise ValueError("a Merkle batch needs at least one leaf")
    level = [_leaf_node(bytes(leaf)) for leaf in leaves]
    position = list(range(len(level)))  # index of each leaf's ancestor in the current level
    proofs: list[list[bytes]] = [[] for _ in leaves]
    while len(level) > 1:
        for leaf_index, pos in enumerate(position):
            sibling = pos ^ 1
            if sibling < len(level):
                proofs[leaf_index].append(level[sibling])
            position[leaf_index] = pos // 2
        level = [
            _inner(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)
        ]
    return level[0], proofs


def verify_proof(leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """Offline inclusion check, the same fold as the contract's ``verifyInclusion``."""
    try:
        node = _leaf_node(bytes(leaf))
        for sibling in proof:
            if len(sibling) != 32:
                return False
            node = _inner(node, bytes(sibling))
        return node == bytes(root)
    except (TypeError, ValueError):
        return False
