"""Results on lanes, folded into `main` (issue 15): a worker's `done` contends with no other worker's.

A worker that holds an item's claim on its lane (board/lanes.py) pushes its `done` onto that lane too: one
more signed commit above its claim, moved with compare-and-swap from the tip it holds, so results on different
items never contend. The `done` is the one main's rules take (it carries its lane claim in `args.lane`); the
lane commit's tree holds what the `done` makes (the item's record, its completion and the output's blob).
Readers lay it over main like a claim: the item reads `in_review`, its completion and blob are readable.

Any registered rig then carries such results into `main` with one `fold` commit:

    {"op": "fold", "by": <folder>, "at": <time>, "args": {"results": [<signed done>, ...]},
     "attachments": [<every blob the dones carry>]}

where each signed done is `{"op", "sig", "parent", "tree"}`: the `done`'s exact operation JSON, its
signature, and the lane commit's parent and tree it was signed over. A fold is valid when it carries 1 to
MAX_FOLD dones of distinct items, each signed by its author's registered key, dated no later than the fold
and not before the item's record, each accepted by main's `done` rule at its own time (so main takes its lane
claim) — and when its attachments are exactly the blobs those dones carry. The fold commit's tree is main's
state with every carried `done` applied. Once folded, the item's record on main has changed, so the lane is
stale and the same `done` can never apply again (the rule needs the item open or claimed).

Who folds: the worker right after its lane push, and every rig's next mutation of `main` (the poster's
accept, a `wl sync`): each fold carries every result it sees, so a worker whose fold push loses a race to
another fold usually finds its result carried already and stops. A result on its lane is submitted; a fold
that gives up loses nothing, since the next one carries it. The worker also keeps its own lane results under
`refs/wl/results/<item>` until main holds them, so a lane deleted by a server that does not validate can
still be folded from the worker's copy.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from board import commits, layout
from board.errors import BoardError, NotRegistered, RuleError, UsageError
from board.ids import parse_time, utcnow
from board.records import loads
from board.text import sanitize

if TYPE_CHECKING:
    from board.ledger import State
    from board.ops import Applied, Op, View
    from board.publish import Chain
    from board.service import Board
    from board.view import TreeView

log = logging.getLogger("wl.board")

MAX_FOLD = 64  # results one fold carries (each costs every validator one signature recovery and one rule)
RESULTS_PREFIX = b"refs/wl/results/"  # this rig's own lane results, kept until main holds them
_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")


def signed_entry(entry: Any) -> Op:
    """The `done` inside one carried result (UsageError when it is not shaped as one)."""
    if not isinstance(entry, dict) or set(entry) != {"op", "sig", "parent", "tree"}:
        raise UsageError("a folded result is exactly op, sig, parent and tree")
    if not all(isinstance(entry[k], str) for k in entry):
        raise UsageError("a folded result's op, sig, parent and tree are strings")
    if not _HEX40.match(entry["parent"]) or not _HEX40.match(entry["tree"]):
        raise UsageError("a folded result's parent and tree are commit and tree ids")
    try:
        inner = commits.parse_op_json(entry["op"])
    except commits.FormatError as e:
        raise RuleError(f"a folded result is not an operation ({e})") from None
    if inner.op != "done" or inner.id is None:
        raise RuleError("a fold carries only `done` operations of items")
    return inner


def fold_rule(view: View, op: Op, now: datetime) -> Applied:
    """The `fold` rule: every carried `done` checked and applied at its own time (see the module's text)."""
    from board import ops

    results = op.args.get("results")
    if set(op.args) != {"results"} or not isinstance(results, list) or not 1 <= len(results) <= MAX_FOLD:
        raise UsageError(f"a fold carries 1 to {MAX_FOLD} results and nothing else")
    if op.id is not None:
        raise UsageError("a fold names no item of its own")
    if view.rig(op.by) is None:
        raise NotRegistered(op.by)
    raw = view.read(layout.BOARD)
    board_id = str(loads(raw).get("board_id", "")) if raw else ""
    changes: dict[str, bytes | None] = {}
    carried: set[str] = set()
    folded: list[str] = []
    for entry in results:
        inner = signed_entry(entry)
        assert inner.id is not None
        if inner.id in folded:
            raise RuleError(f"a fold carries one result of wanted item {inner.id}")
        rig = view.rig(inner.by)
        if rig is None:
            raise NotRegistered(inner.by)
        got = commits.signer(board_id, entry["parent"].encode(), entry["tree"].encode(), entry["op"], entry["sig"])
        if got is None or got.lower() != rig.address.lower():
            raise RuleError(f"the folded result of wanted item {inner.id} is not signed by {inner.by}'s registered key")
        try:
            at = parse_time(inner.at)
        except ValueError:
            raise RuleError(f"the folded result of wanted item {inner.id} has no valid time") from None
        item = ops._item(view, inner)
        if at > now or (item.updated_at and at < parse_time(item.updated_at)):
            raise RuleError(f"the folded result of wanted item {inner.id} is dated {inner.at}, outside its record's life")
        applied = ops.apply(view, inner, at)
        changes.update(applied.changes)
        carried.update(inner.attachments)
        folded.append(inner.id)
    if sorted(carried) != sorted(op.attachments):
        raise RuleError("a fold carries exactly the blobs of the results it folds")
    return ops.Applied(changes, {"folded": folded})


def entry_of(signed: commits.Signed, parent: bytes, tree: bytes) -> dict[str, str]:
    """A lane `done` commit as a fold carries it."""
    return {"op": signed.op_json, "sig": signed.sig, "parent": parent.decode(), "tree": tree.decode()}


def add_fold(board: Board, chain: Chain, state: State) -> list[str]:
    """Add one `fold` commit to the chain carrying the lane results main does not hold yet (the live lanes'
    and this rig's own kept ones, at most MAX_FOLD); the items it folds. A result main's rules refuse on the
    chain's state is left out; one of our own that main will never take is kept (`wl` says where)."""
    from board.claims import live_lanes
    from board.ops import Op

    if state.legacy or not board.handle:
        return []
    found: dict[str, tuple[dict[str, str], bytes]] = {}
    for item_id, lane in sorted(live_lanes(board).items()):
        if lane.done is not None:
            found[item_id] = (lane.done, lane.tip)
    own = {}
    for ref, sha in board.store.refs_under(RESULTS_PREFIX):
        item_id = layout.lane_item(ref, RESULTS_PREFIX)
        if item_id is not None:
            own[item_id] = sha
            if item_id not in found:
                entry = _entry_at(board, sha)
                if entry is not None:
                    found[item_id] = (entry, sha)
    view = chain.view()
    now = utcnow()
    take: list[dict[str, str]] = []
    blobs: dict[str, bytes] = {}
    for item_id, (entry, sha) in found.items():
        if len(take) >= MAX_FOLD:
            break
        try:
            inner = signed_entry(entry)
            carried = {p: board.store.read(board.store.tree_id(sha), p) for p in inner.attachments}
            if any(v is None for v in carried.values()):
                continue  # its blob is not here (a lane fetched in part): whoever has it folds it
            alone = Op(op="fold", by=board.handle, at="", args={"results": [entry]}, attachments=sorted(carried))
            fold_rule(view, alone, now)
        except (BoardError, ValueError, KeyError) as e:
            if item_id in own:
                _settle(board, view, item_id, own[item_id], str(e))
            continue
        take.append(entry)
        blobs.update({p: v for p, v in carried.items() if v is not None})
    if not take:
        return []
    op = Op(op="fold", by=board.handle, at="", args={"results": take})
    try:
        chain.add(op, blobs)
    except BoardError as e:  # the chain moved past a result's time, or a key changed: the next fold tries again
        log.info("no fold this time: %s", sanitize(str(e)))
        return []
    return [str(signed_entry(r).id) for r in take]


def _entry_at(board: Board, sha: bytes) -> dict[str, str] | None:
    """Our own kept lane result as a fold carries it; None when the commit is not one."""
    try:
        c = board.store.commit(sha)
        signed = commits.parse(c.message)
    except (KeyError, commits.FormatError):
        return None
    if signed.op.op != "done" or len(c.parents) != 1:
        return None
    return entry_of(signed, c.parents[0], c.tree)


def _settle(board: Board, view: TreeView, item_id: str, sha: bytes, reason: str) -> None:
    """Our own lane result main refuses: forget it when main holds our completion of the item, keep it
    (refs/wl/kept/, a record in the home's kept folder) when main will never take it."""
    comp = view.completion(item_id)
    board.store.remove_ref(RESULTS_PREFIX + item_id.encode())
    if comp is not None and comp.completed_by == board.handle:
        return
    item = None
    try:
        item = view.item(item_id)
    except BoardError:
        pass
    if item is not None and item.status in ("open", "claimed") and "dated" in reason:
        board.store.force_ref(RESULTS_PREFIX + item_id.encode(), sha)  # its time has not come yet: later
        return
    signed = commits.parse(board.store.commit(sha).message)
    board._keep(sha, signed.op, reason)


def carried(op: Op) -> list[Op]:
    """The `done`s a fold operation carries, as their authors signed them ([] for anything else)."""
    if op.op != "fold" or not isinstance(op.args.get("results"), list):
        return []
    out = []
    for entry in op.args["results"]:
        try:
            out.append(signed_entry(entry))
        except BoardError:
            continue
    return out


def own_results(board: Board) -> list[str]:
    """This rig's results on lanes that main does not hold yet (as far as this rig knows)."""
    return [i for ref, _ in board.store.refs_under(RESULTS_PREFIX) if (i := layout.lane_item(ref, RESULTS_PREFIX))]
