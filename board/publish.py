"""Building signed commits on top of the validated state: operations, repairs, republications, checkpoints.

A Chain starts at the remote head and the validated state's tree; each commit it adds is signed by this rig
over (board id, parent, tree, operation). Nothing is pushed here: the service pushes the chain with
compare-and-swap, after the ledger has validated it exactly as every other rig will.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from board import commits, ops
from board.errors import AlreadyApplied, BoardError
from board.ids import fmt_time, utcnow
from board.ledger import Dropped, InvalidBoard, State, checkpoint_tree, registered_signer
from board.ops import Op
from board.records import BOARD_FORMAT
from board.store import NewObjects, Store
from board.treecheck import TreeProblem, strict_time
from board.view import TreeView


class KeyMismatch(BoardError):
    def __init__(self, handle: str, local: str, registered: str) -> None:
        super().__init__(
            f"this home's key {local} is not the key the board registers for {handle} ({registered}); "
            "other rigs would refuse its commits"
        )


@dataclass
class Chain:
    store: Store
    board_id: str
    keys: dict[str, bytes]  # lowercase address → private key: the home's key and a pending rotation's
    head: bytes | None
    tree: bytes
    at: str
    new: NewObjects = field(default_factory=NewObjects)
    commits: list[bytes] = field(default_factory=list)
    persist: bool = True  # False: its objects stay in `new`, unwritten (one commit at most: nothing reads them)

    @classmethod
    def on(
        cls, store: Store, state: State, keys: list[bytes], head: bytes | None, tree: bytes | None = None
    ) -> Chain:
        from board.secp256k1 import address_of

        by_address = {address_of(k).lower(): k for k in keys}
        return cls(store, state.board_id, by_address, head, tree or state.tree.encode(), state.at)

    def view(self) -> TreeView:
        return TreeView(self.store, self.tree)

    def _stamp(self, op: Op) -> None:
        """An operation is never dated before the one it follows (validators refuse time going backwards)."""
        now = fmt_time(utcnow())
        op.at = max(now, self.at)
        self.at = op.at

    def _sign_commit(self, op: Op, tree: bytes) -> bytes:
        first = next(iter(self.keys))
        try:
            expected = registered_signer(self.view(), op).lower()
        except Exception:  # noqa: BLE001 - not registered: the rules have reported it already
            expected = first
        key = self.keys.get(expected)
        if key is None:
            raise KeyMismatch(op.by, first, expected)
        op_json = op.encode()
        sig = commits.sign(key, self.board_id, self.head, tree, op_json)
        commit = self.store.commit_tree(self.head, tree, commits.message(op_json, op, sig), op.by, self.new,
                                        save=self.persist)
        self.head, self.tree = commit, tree
        self.commits.append(commit)
        return commit

    def add(self, op: Op, attachments: dict[str, bytes] | None = None) -> ops.Applied:
        """Apply one of this rig's operations (its rule checked on the chain's state) and sign it."""
        attachments = attachments or {}
        op.attachments = sorted(attachments)
        self._stamp(op)
        applied = ops.apply(self.view(), op, strict_time(op.at))
        tree = self.store.build_tree(self.tree, {**applied.changes, **attachments}, self.new)
        self._sign_commit(op, tree)
        return applied

    def repair(self, by: str, excludes: list[str]) -> bytes:
        """Publish the validated state over a commons that holds invalid commits."""
        op = Op(op="repair", by=by, at="", args={"excludes": excludes})
        self._stamp(op)
        if self.head is not None:  # the state's own trees and blobs: the remote has never seen them
            self._carry(self.tree, self.store.tree_id(self.head))
        return self._sign_commit(op, self.tree)

    def _carry(self, tree: bytes, base: bytes | None) -> None:
        """Add to the push every object of `tree` that `base` (the remote's tree) lacks at the same path."""
        from board.store import TREE_MODE

        self.new.add(self.store.tree(tree))
        try:
            old = {e.path: (e.mode, e.sha) for e in self.store.tree(base).iteritems()} if base else {}
        except KeyError:  # the remote's "folder" is not a tree (a crafted commit): send ours whole
            old = {}
        for e in self.store.tree(tree).iteritems():
            if old.get(e.path) == (e.mode, e.sha):
                continue
            if e.mode == TREE_MODE:
                prev = old.get(e.path)
                self._carry(e.sha, prev[1] if prev and prev[0] == TREE_MODE else None)
            else:
                self.new.add(self.store.get(e.sha))

    def checkpoint(self, by: str) -> bytes:
        """Start validation of a wl-board/1 board: its records as they are, board.json now wl-board/2."""
        op = Op(op="checkpoint", by=by, at="", args={"format": BOARD_FORMAT})
        self._stamp(op)
        try:
            tree = checkpoint_tree(self.store, self.tree, self.new)
        except TreeProblem as e:  # another participant's bad entry: no valid wl-board/2 board can hold it
            raise InvalidBoard(f"it cannot be checkpointed into {BOARD_FORMAT}: {e}") from None
        return self._sign_commit(op, tree)

    def republish(self, by: str, dropped: Dropped, state: State) -> Op:
        """Re-publish an operation a history rewrite dropped, under its author's original signature."""
        inner = dropped.op()
        last = state.authors.get(inner.by)
        if last is not None and (inner.at < last["at"] or dropped.sig in last["sigs"]):
            raise AlreadyApplied(f"{inner.op} {inner.id or ''} by {inner.by} is already on the board")
        expected = registered_signer(self.view(), inner)
        parent = dropped.parent.encode() if dropped.parent else None
        got = commits.signer(self.board_id, parent, dropped.tree.encode(), dropped.op_json, dropped.sig)
        if got is None or got.lower() != expected.lower():
            raise BoardError(f"the dropped {inner.op} is not signed by {inner.by}'s registered key")
        applied = ops.apply(self.view(), inner, strict_time(inner.at))
        carried: dict[str, bytes | None] = {}
        for path in inner.attachments:
            data = self.store.read(dropped.tree.encode(), path) if self.store.has(dropped.tree.encode()) else None
            if data is None:
                raise BoardError(f"the dropped {inner.op} carried {path}, which this rig does not have")
            carried[path] = data
        tree = self.store.build_tree(self.tree, {**applied.changes, **carried}, self.new)
        args: dict[str, Any] = {"commit": dropped.commit, "parent": dropped.parent, "tree": dropped.tree,
                                "op": dropped.op_json, "sig": dropped.sig}
        op = Op(op="republish", by=by, at="", id=inner.id, args=args)
        self._stamp(op)
        self._sign_commit(op, tree)
        return inner
