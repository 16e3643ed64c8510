"""Folding lane results into main: the builder side of board/folds.py (which holds the `fold` rule).

Every mutation of main this rig publishes first adds one `fold` commit carrying the lane results main does not
hold yet: those of the live lanes, and this rig's own, kept under refs/wl/results/ until main holds them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from board import commits, layout
from board.errors import BoardError
from board.folds import MAX_FOLD, RESULTS_PREFIX, entry_of, fold_rule, signed_entry
from board.ids import utcnow
from board.text import sanitize

if TYPE_CHECKING:
    from board.ledger import State
    from board.publish import Chain
    from board.service import Board
    from board.view import TreeView

log = logging.getLogger("wl.board")


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
        kept_id = layout.lane_item(ref, RESULTS_PREFIX)
        if kept_id is not None:
            own[kept_id] = sha
            if kept_id not in found:
                entry = _entry_at(board, sha)
                if entry is not None:
                    found[kept_id] = (entry, sha)
    view = chain.view()
    take: list[dict[str, str]] = []
    blobs: dict[str, bytes] = {}
    for entry, sha in found.values():
        if len(take) >= MAX_FOLD:
            break
        carried = _blobs(board, entry, sha)
        if carried is not None:
            take.append(entry)
            blobs.update(carried)
    if not take:
        return []
    try:  # a live lane's result was checked as its lane was folded: the rule refuses one only rarely
        chain.add(Op(op="fold", by=board.handle, at="", args={"results": take}), blobs)
    except BoardError:  # then check each alone on the chain's state, and fold those that pass
        take, blobs = _each_alone(board, view, take, own, found)
        if not take:
            return []
        try:
            chain.add(Op(op="fold", by=board.handle, at="", args={"results": take}), blobs)
        except BoardError as e:  # a key changed, the clock: the next fold tries again
            log.info("no fold this time: %s", sanitize(str(e)))
            return []
    return [str(signed_entry(r).id) for r in take]


def _blobs(board: Board, entry: dict[str, str], sha: bytes) -> dict[str, bytes] | None:
    """The blobs a result carries, from its lane commit; None when one is not here (whoever has it folds it)."""
    try:
        inner = signed_entry(entry)
        tree = board.store.tree_id(sha)
        out = {p: board.store.read(tree, p) for p in inner.attachments}
    except (BoardError, KeyError, ValueError):
        return None
    return None if any(v is None for v in out.values()) else {p: v for p, v in out.items() if v is not None}


def _each_alone(
    board: Board, view: TreeView, take: list[dict[str, str]], own: dict[str, bytes],
    found: dict[str, tuple[dict[str, str], bytes]],
) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """The results main's rules take on this state, each checked alone; ours it refuses are settled."""
    from board.ops import Op

    now = utcnow()
    kept: list[dict[str, str]] = []
    blobs: dict[str, bytes] = {}
    for entry in take:
        inner = signed_entry(entry)
        assert inner.id is not None
        carried = _blobs(board, entry, found[inner.id][1]) or {}
        alone = Op(op="fold", by=str(board.handle), at="", args={"results": [entry]}, attachments=sorted(carried))
        try:
            fold_rule(view, alone, now)
        except (BoardError, ValueError, KeyError) as e:
            if inner.id in own:
                _settle(board, view, inner.id, own[inner.id], str(e))
            continue
        kept.append(entry)
        blobs.update(carried)
    return kept, blobs


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


def own_results(board: Board) -> list[str]:
    """This rig's results on lanes that main does not hold yet (as far as this rig knows)."""
    return [i for ref, _ in board.store.refs_under(RESULTS_PREFIX) if (i := layout.lane_item(ref, RESULTS_PREFIX))]


def landed(board: Board, folded: list[str]) -> list[str]:
    """A fold reached main: its lanes are stale (this rig's next lane push deletes them), our copies go."""
    if folded:
        from board.claims import spend

        spend(board, folded)
        for item_id in folded:
            board.store.remove_ref(RESULTS_PREFIX + item_id.encode())
    return folded
