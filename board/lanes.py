"""Claim lanes: a claim lives on its item's own ref, so claims on different items never contend.

A lane is the ref `refs/wl/claims/<item id>` on the commons. It holds a short chain of ordinary signed
commits (board/commits.py), each one `claim`, `renew` or `unclaim` of that item. The lane's first commit
builds on a main commit whose record of the item is the one the validated main state holds now; each later
one builds on the lane commit before it. A rig claims by pushing the lane with git's create-if-absent (the
push's old value is zero) or, when the lane is there, with compare-and-swap from the tip it read: the server
lets exactly one of two racing claims in, and claims on other items touch other refs.

Readers fold a lane into the board: walking back from its tip (at most MAX_LANE commits) to the commit built
on the item's current main record, every commit must be signed by its actor's registered key (as the
validated main state registers it), dated monotonically and not in the future, and accepted by the same
rules (board/ops.py) applied to the record the lane had so far; the record each commit stores must be
exactly what its rule makes. The item's record as the lane leaves it overlays the main state. A lane whose
base is no longer the item's main record (the claimer's `done` landed on main, the poster withdrew it) is
stale and ignored; one that fails a check is ignored and reported. A replayed old lane cannot match: the
base must equal the item's current record byte for byte, and every operation on main changes it.

The claimer's `done` on main carries its latest lane claim (`args.lane`: the signed operation with the
parent and tree it was signed over), so main's rules accept the completion of an item main still has open;
see ops._lane_claim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from board import commits, layout, ops
from board.errors import BoardError, NotAllowed, NotRegistered, RuleError, UsageError, WrongStatus
from board.ids import parse_time, utcnow
from board.records import Item, loads
from board.store import Store
from board.treecheck import strict_time
from board.view import TreeView

REMOTE_PREFIX = layout.LANE_PREFIX  # on the commons
LOCAL_PREFIX = b"refs/wl/lanes/"  # this rig's copy of the lanes it fetched (keeps their objects)
LANE_OPS = ("claim", "renew", "unclaim", "done")
MAX_LANE = 64  # commits a lane may hold above its base; a longer one is not read


def remote_ref(item_id: str) -> bytes:
    return REMOTE_PREFIX + item_id.encode("ascii")


def item_of(ref: bytes, prefix: bytes = REMOTE_PREFIX) -> str | None:
    """The item id a lane ref names, or None when the name is not exactly a lane."""
    return layout.lane_item(ref, prefix)


def record_blob(store: Store, tree: bytes, item_id: str) -> bytes | None:
    """The sha of the item's record in a tree (bucketed path first, as readers read it)."""
    for path in (layout.item_path(item_id), layout.item_flat_path(item_id)):
        try:
            entry = store.lookup(tree, path)
        except (KeyError, ValueError, TypeError):
            return None
        if entry is not None:
            return entry[1]
    return None


def file_blob(store: Store, tree: bytes, path: str) -> bytes | None:
    """The sha of the file at `path` in a tree, or None."""
    try:
        entry = store.lookup(tree, path)
    except (KeyError, ValueError, TypeError):
        return None
    return entry[1] if entry is not None else None


class LaneProblem(Exception):
    """Why a lane cannot be folded into the board."""


@dataclass
class Lane:
    item_id: str
    tip: bytes
    commits: list[bytes]  # the live commits above the base, oldest first
    item: Item  # the record as the lane leaves it
    proof: dict[str, str] | None = None  # the latest claim/renew by the claimer, for its `done` on main
    ops: list[ops.Op] = field(default_factory=list)
    done: dict[str, str] | None = None  # the lane's `done`, as a fold carries it (board/folds.py)
    files: dict[str, bytes] = field(default_factory=dict)  # path → blob sha of what that `done` wrote


def fold(store: Store, main: TreeView, board_id: str, item_id: str, tip: bytes, skew: int = 600) -> Lane | None:
    """The lane at `tip` read against the validated main state; None when stale; LaneProblem when invalid."""
    current = record_blob(store, main.tree, item_id)
    if current is None:
        return None  # no such item on main (yet, or archived): nothing to overlay
    chain: list[tuple[bytes, Any, commits.Signed]] = []
    sha = tip
    for _ in range(MAX_LANE):
        try:
            c = store.commit(sha)
        except KeyError:
            return None  # its history is not here (a lane rebuilt on a commit we never fetched)
        if len(c.parents) != 1:
            raise LaneProblem("a lane commit must have exactly one parent")
        try:
            signed = commits.parse(c.message)
        except commits.FormatError as e:
            raise LaneProblem(str(e)) from None
        if signed.op.op not in LANE_OPS or signed.op.id != item_id:
            return None  # walked past the lane into history that never held this item's current record
        chain.append((sha, c, signed))
        parent = c.parents[0]
        try:
            base_tree = store.tree_id(parent)
        except KeyError:
            return None
        if record_blob(store, base_tree, item_id) == current:
            break
        sha = parent
    else:
        return None
    chain.reverse()
    view = TreeView(store, store.tree_id(chain[0][1].parents[0]))
    record = view.item(item_id)
    assert record is not None  # its blob is the main record's
    last = strict_time(record.updated_at) if record.updated_at else None
    lane = Lane(item_id, tip, [], record)
    limit = utcnow().timestamp() + skew
    for sha, c, signed in chain:
        op = signed.op
        rig = main.rig(op.by)
        if rig is None:
            raise LaneProblem(f"{op.by} is not registered")
        got = commits.signer(board_id, c.parents[0], c.tree, signed.op_json, signed.sig)
        if got is None or got.lower() != rig.address.lower():
            raise LaneProblem(f"its {op.op} is not signed by {op.by}'s registered key")
        try:
            when = strict_time(op.at)
        except ValueError:
            raise LaneProblem(f"its time {op.at[:40]!r} is not a valid UTC time") from None
        if (last is not None and when < last) or when.timestamp() > limit:
            raise LaneProblem(f"its {op.op} is dated {op.at}, out of order or in the future")
        try:
            applied = ops.apply(view, op, when)
        except BoardError as e:
            raise LaneProblem(f"the rules refuse its {op.op}: {e}") from None
        if lane.done is not None:
            raise LaneProblem("it goes on past its `done`")
        if op.op == "done" and lane.proof is None:
            return None  # a result whose claim lies below the base: the record it built on came back (stale)
        if op.op == "done":
            _check_done(store, view, lane, op, c.tree, applied.changes)
        written = applied.changes.get(layout.item_path(item_id))
        stored = record_blob(store, c.tree, item_id)
        if written is None or stored is None or store.blob_text(stored) != written:
            raise LaneProblem(f"its tree does not hold what its {op.op} makes")
        view = TreeView(store, c.tree)
        lane.item = Item.decode(written)
        lane.commits.append(sha)
        lane.ops.append(op)
        last = when
        if op.op in ("claim", "renew"):
            parent = c.parents[0].decode()
            lane.proof = {"op": signed.op_json, "sig": signed.sig, "parent": parent, "tree": c.tree.decode()}
        elif op.op == "done":
            from board.folds import entry_of

            lane.done = entry_of(signed, c.parents[0], c.tree)
            for path in (layout.completion_path(item_id), *op.attachments):
                blob = file_blob(store, c.tree, path)
                assert blob is not None  # _check_done compared the whole tree
                lane.files[path] = blob
    if lane.item.status != "claimed":
        lane.proof = None
    return lane


def _check_done(store: Store, view: TreeView, lane: Lane, op: ops.Op, tree: bytes, changes: dict[str, Any]) -> None:
    """A `done` on a lane is one main's rules will take: it carries the lane's own latest claim by its
    author, and the lane commit's tree is exactly the one before it plus what the `done` makes and carries."""
    from board.treecheck import TreeProblem, attachment_blobs

    if lane.proof is None or op.args.get("lane") != lane.proof or lane.item.claimed_by != op.by:
        raise LaneProblem("its `done` does not carry its author's latest claim on this lane")
    try:
        carried = attachment_blobs(store, tree, op.attachments)
    except TreeProblem as e:
        raise LaneProblem(str(e)) from None
    full = {**changes, **carried}
    same = store.tree_matches(view.tree, tree, full)
    if same is None:
        from board.store import NewObjects

        same = store.build_tree(view.tree, full, NewObjects()) == tree
    if not same:
        raise LaneProblem("its tree does not hold exactly what its done makes")


def proof_op(proof: Any) -> ops.Op:
    """The operation inside a lane proof (FormatError when it is not one)."""
    if not isinstance(proof, dict) or not all(isinstance(proof.get(k), str) for k in ("op", "sig", "parent", "tree")):
        raise commits.FormatError("a lane proof names op, sig, parent and tree")
    return commits.parse_op_json(proof["op"])


def claim_of(proof: Any) -> ops.Op | None:
    """The claim a `done` carried from its lane (its `args.lane`), or None when there is none to read."""
    try:
        return proof_op(proof)
    except ValueError:
        return None


HEX40 = re.compile(r"^[0-9a-f]{40}\Z")


def take_lane_claim(view: ops.View, op: ops.Op, item: Item, now: datetime) -> None:
    """Take the claim `op.by` holds on the item's lane as the item's claim on main (the `done` rule's half).

    `args.lane` is the lane's latest claim or renewal by the completer: its exact operation JSON, signature,
    and the parent and tree it was signed over. It counts when it is signed by the completer's registered key,
    is a claim of this item, is not older than the item's record on main (so a claim from before the item's
    last change cannot come back) nor newer than the `done`, and main's record still lets it in: open, or
    a claim whose lease had run out by the lane claim's time."""
    proof = op.args.get("lane")
    if not isinstance(proof, dict) or not all(isinstance(proof.get(k), str) for k in ("op", "sig", "parent", "tree")):
        raise UsageError("a lane claim names op, sig, parent and tree")
    if not HEX40.match(proof["parent"]) or not HEX40.match(proof["tree"]):
        raise UsageError("a lane claim's parent and tree are commit and tree ids")
    try:
        inner = commits.parse_op_json(proof["op"])
    except commits.FormatError as e:
        raise RuleError(f"the lane claim of wanted item {item.id} is not an operation ({e})") from None
    if inner.op not in ("claim", "renew") or inner.id != item.id or inner.by != op.by:
        raise RuleError(f"the lane claim is not {op.by}'s claim of wanted item {item.id}")
    rig = view.rig(op.by)
    if rig is None:
        raise NotRegistered(op.by)
    raw = view.read(layout.BOARD)
    board_id = str(loads(raw).get("board_id", "")) if raw else ""
    got = commits.signer(board_id, proof["parent"].encode(), proof["tree"].encode(), proof["op"], proof["sig"])
    if got is None or got.lower() != rig.address.lower():
        raise RuleError(f"the lane claim of wanted item {item.id} is not signed by {op.by}'s registered key")
    try:
        at = parse_time(inner.at)
    except ValueError:
        raise RuleError(f"the lane claim of wanted item {item.id} has no valid time") from None
    if item.status == "claimed" and item.claimed_by != op.by and not ops.lease_expired(item, at):
        raise NotAllowed(item.id, op.by, "complete", f"the claimer ({item.claimed_by})")
    if item.status not in ("open", "claimed"):
        raise WrongStatus(item.id, item.status, "open", "its lane claim cannot complete it")
    if (item.updated_at and at < parse_time(item.updated_at)) or at > now:
        raise RuleError(f"the lane claim of wanted item {item.id} is dated {inner.at}, outside its record's life")
    item.status, item.claimed_by = "claimed", op.by
