"""Folding lane results into main: the builder side of board/folds.py (which holds the `fold` rule).

Every mutation of main this rig publishes first adds one `fold` commit carrying the lane results main does not
hold yet: those of the live lanes, and this rig's own, kept under refs/wl/results/ until main holds them.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from board import commits, layout
from board.errors import BoardError
from board.folds import MAX_FOLD, RESULTS_PREFIX, entry_of, fold_rule, signed_entry
from board.ids import parse_time, utcnow
from board.ops import Op
from board.results import MutationResult
from board.text import sanitize

if TYPE_CHECKING:
    from board.ledger import State
    from board.publish import Chain
    from board.service import Board
    from board.view import TreeView

log = logging.getLogger("wl.board")


Found = dict[str, tuple[dict[str, str], bytes, dict[str, bytes] | None]]  # item → (entry, lane commit, blobs)

QUIET_S = 1.0  # a courteous worker folds once main has been quiet this long (times 1 to 2, per rig and period)
MAX_DEFER = 10  # quiet periods a courteous worker leaves its results to other folds at most, main busy or not


class Courtesy:
    """A long-running worker's fold manners (issue 15): while someone else moved `main` lately, its results
    stay on their lanes, which nobody's work can refuse, for the next fold to carry (every fold carries every
    lane result its folder saw, up to MAX_FOLD), instead of racing that folder for `main`. So one worker, the
    one that folded last, goes on folding for everyone, and the others leave `main` to it.

    "Lately" is by the time of main's last operation, as the fetch that found it says (a worker that fetches
    only between 30 s jobs still sees that the last fold was 5 s ago, not just now). It folds again once main
    has been quiet for the quiet time: `quiet` seconds, or twice the usual gap between those moves where that is
    longer (a folder whose jobs take 5 s moves main every 5 s), times a factor from 1 to 2 drawn per rig and
    quiet period, so two waiting workers seldom fold at the same moment. A result of its own that nobody
    carried for MAX_DEFER times `quiet` is folded whatever `main` does. A one-shot command has none: it folds
    at once."""

    def __init__(self, quiet: float = QUIET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet, self.clock = quiet, clock
        self.moved_at: float | None = None  # when `main` last moved by someone else, on this rig's clock
        self.gap = 0.0  # the usual time between those moves (a moving average)
        self.looked_at: float | None = None  # its last fetch: how long main was quiet is known up to there
        self.first: dict[str, float] = {}  # our results waiting on their lanes → when this rig first deferred them

    def fetched(self, moved: bool, at: str | None = None, commits: int = 1) -> None:
        """After a fetch: whether it found `main` moved by someone else, with the time of main's last operation
        and how many commits arrived. The first fetch is a baseline only: it cannot say whose main's last commit
        was (a worker started on a board folds at once)."""
        if moved and self.looked_at is not None:
            age = 0.0
            if at is not None:
                with contextlib.suppress(ValueError):  # times are to the second: at least this long ago
                    age = min(max(0.0, (utcnow() - parse_time(at)).total_seconds() - 1), self.clock() - self.looked_at)
            self.moved(age, commits)
        self.looked_at = self.clock()

    def moved(self, age: float = 0.0, commits: int = 1) -> None:
        """Someone else moved `main` `age` seconds ago (a fetch found it, or a push of ours was refused now);
        `commits`: how many commits of theirs since the last move seen."""
        at = self.clock() - age
        if self.moved_at is not None and at > self.moved_at:
            each = (at - self.moved_at) / max(1, commits)
            self.gap = min((self.gap + each) / 2, self.quiet * MAX_DEFER / 4)
        self.moved_at = max(at, self.moved_at or at)

    def defer(self, handle: str | None, waiting: list[str]) -> bool:
        """Whether to leave our lane results to somebody else's fold now (`waiting`: ours not on main yet)."""
        now = self.clock()
        self.first = {i: self.first.get(i, now) for i in waiting}
        if self.moved_at is None:
            return False
        factor = random.Random(f"{handle}/{self.moved_at}").uniform(1.0, 2.0)
        quiet_for = max(self.looked_at or 0.0, self.moved_at) - self.moved_at
        if quiet_for >= max(self.quiet, 2 * self.gap) * factor:
            return False
        return now - min(self.first.values(), default=now) < self.quiet * MAX_DEFER


def deferring(board: Board, fresh: list[str] | None = None) -> bool:
    """Whether this rig's manners say: no fold of ours on `main` just now (board/folding.Courtesy); `fresh`:
    the items of ours being submitted."""
    manners: Courtesy | None = board.courtesy
    return manners is not None and manners.defer(board.handle, sorted({*_waiting(board), *(fresh or [])}))


def _waiting(board: Board) -> list[str]:
    """Our results only on their lanes, as far as main's validated state says; the copies of those somebody
    else's fold carried (main holds that very completion, by id) are let go."""
    from board.view import TreeView

    kept = [(i, sha) for ref, sha in board.store.refs_under(RESULTS_PREFIX) if (i := layout.lane_item(ref, RESULTS_PREFIX))]
    state = board.ledger.load() if kept else None
    if state is None:
        return [i for i, _ in kept]
    view = TreeView(board.store, state.tree.encode())
    waiting = []
    for item_id, sha in kept:
        comp = view.completion(item_id)
        if comp is not None and comp.completed_by == board.handle and _completion_id(board, sha) == comp.id:
            board.store.remove_ref(RESULTS_PREFIX + item_id.encode())
        else:
            waiting.append(item_id)
    return waiting


def add_fold(board: Board, chain: Chain, state: State, extra: Found | None = None) -> list[str]:
    """Add one `fold` commit to the chain carrying the lane results main does not hold yet (the live lanes'
    and this rig's own kept ones, at most MAX_FOLD); the items it folds. A result main's rules refuse on the
    chain's state is left out; one of our own that main will never take is kept (`wl` says where). `extra`:
    results of ours signed on lane commits not pushed nor written (board/folding.submit), with their blobs."""
    from board.claims import live_lanes

    if state.legacy or not board.handle or deferring(board, list(extra or {})):
        return []
    found: Found = dict(extra or {})  # ours, signed but not pushed: first
    for item_id, lane in sorted(live_lanes(board).items()):
        if lane.done is not None and item_id not in found:
            found[item_id] = (lane.done, lane.tip, None)
    own = {}
    for ref, sha in board.store.refs_under(RESULTS_PREFIX):
        kept_id = layout.lane_item(ref, RESULTS_PREFIX)
        if kept_id is not None:
            own[kept_id] = sha
            if kept_id not in found:
                entry = _entry_at(board, sha)
                if entry is not None:
                    found[kept_id] = (entry, sha, None)
    view = chain.view()
    take: list[dict[str, str]] = []
    blobs: dict[str, bytes] = {}
    for entry, sha, known in found.values():
        if len(take) >= MAX_FOLD:
            break
        carried = known if known is not None else _blobs(board, entry, sha)
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
    board: Board, view: TreeView, take: list[dict[str, str]], own: dict[str, bytes], found: Found
) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """The results main's rules take on this state, each checked alone; ours it refuses are settled."""
    now = utcnow()
    kept: list[dict[str, str]] = []
    blobs: dict[str, bytes] = {}
    for entry in take:
        inner = signed_entry(entry)
        assert inner.id is not None
        _, sha, known = found[inner.id]
        carried = (known if known is not None else _blobs(board, entry, sha)) or {}
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


def _completion_id(board: Board, sha: bytes) -> object:
    """The completion id our kept lane result names (None when the commit is not one of ours here)."""
    try:
        return commits.parse(board.store.commit(sha).message).op.args.get("completion_id")
    except (KeyError, commits.FormatError):
        return None


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


def submit(
    board: Board, batch: list[Op], files: dict[str, dict[str, bytes]], fold: bool = True
) -> dict[str, MutationResult | BoardError]:
    """Submit this rig's `done`s of items it holds on lanes; per item, its result or why not.

    First one compare-and-swap push of main with a fold of them (signed on lane commits that are not pushed):
    when nobody else moved main, that is the whole submission, one push. If main moved, they go onto their
    lanes in one push, which nobody else's work can refuse, and are folded from there (now, as far as
    FOLD_ATTEMPTS allow, when `fold`; else by the caller, who is publishing main anyway)."""
    from board.claims import fold_now, push

    out: dict[str, MutationResult | BoardError] = dict(_fold_first(board, batch, files))
    rest = [op for op in batch if op.id not in out]
    if rest:
        out.update(push(board, rest, files))
        if fold and any(isinstance(out.get(op.id or ""), MutationResult) for op in rest) and not deferring(board):
            fold_now(board)
    return out


def _fold_first(board: Board, batch: list[Op], files: dict[str, dict[str, bytes]]) -> dict[str, MutationResult]:
    """One try at folding our results straight into main; the items it landed (none when main moved)."""
    from dulwich.objects import Commit

    from board.claims import _build
    from board.publish import Chain
    from board.remote import Rejected
    from board.store import MAIN, ORIGIN_MAIN

    state, origin = board.ledger.load(), board.store.ref(ORIGIN_MAIN)
    if state is None or origin is None or state.dropped or state.commit != origin.decode():
        return {}
    if deferring(board, [str(op.id) for op in batch]):
        return {}
    if not board.ledger.healthy(state) or board.remote is None:
        return {}
    refused: dict[str, MutationResult | BoardError] = {}
    built = _build(board, batch, refused, files, persist=False)  # written only if they go onto their lanes
    extra: Found = {}
    for item_id, (_, _, lane_chain) in built.items():
        assert lane_chain.head is not None
        c = lane_chain.new.objects[-1]
        assert isinstance(c, Commit) and c.id == lane_chain.head
        entry = entry_of(commits.parse(c.message), c.parents[0], c.tree)
        extra[item_id] = (entry, lane_chain.head, files.get(item_id, {}))
    chain = Chain.on(board.store, state, board._keys(), origin)
    carried_now = add_fold(board, chain, state, extra)  # ours first, and any other lane results there are
    folded = [i for i in carried_now if i in extra]
    if not folded or chain.head is None:
        return {}
    try:
        checked = board._self_check(state, chain.commits)
        board.remote.push(board.store, chain.head, origin, chain.new)
    except (Rejected, BoardError):
        board.retries += 1
        if board.courtesy is not None:
            board.courtesy.moved()  # someone else moved main: the lane push next, the fold left to them
        return {}
    board.store.force_ref(ORIGIN_MAIN, chain.head)
    board.ledger.save(checked)
    if board.store.ref(MAIN) == origin:
        board.store.force_ref(MAIN, chain.head)
    head = chain.head.decode()
    landed(board, carried_now)
    ops_by = {op.id: op for op in batch}
    return {i: MutationResult(ops_by[i], built[i][1], head, True, None, 1) for i in folded}


def lift(board: Board, pending: list[tuple[bytes, Op]]) -> tuple[list[tuple[bytes, Op]], list[Op]]:
    """Submit this rig's pending local `done`s of items it holds on lanes (a worker's batch), as `submit`
    does but leaving the fold from lanes to the caller: (the pending commits left for main's replay, the
    operations submitted)."""
    from board.claims import on_lane

    mine = [(sha, op) for sha, op in pending if op.op == "done" and op.id is not None and on_lane(board, op)]
    if not mine:
        return pending, []
    files = {op.id: board._attachments(sha, op) for sha, op in mine if op.id is not None}
    done = submit(board, [Op.from_dict(op.to_dict()) for _, op in mine], files, fold=False)
    lifted = {sha for sha, op in mine if isinstance(done.get(op.id or ""), MutationResult)}
    return [(sha, o) for sha, o in pending if sha not in lifted], [o for sha, o in pending if sha in lifted]
