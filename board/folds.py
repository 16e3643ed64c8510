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

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from board import commits, layout
from board.errors import BoardError, NotRegistered, RuleError, UsageError
from board.ids import parse_time
from board.records import loads

if TYPE_CHECKING:
    from board.ops import Applied, Op, View

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
