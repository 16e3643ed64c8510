"""Claiming on lanes: build the lane commits for several claim/renew/unclaim operations and push them at once.

Every operation gets its own lane commit, signed by this rig, built on the item's lane tip when the lane is
live and on the validated main head otherwise (board/lanes.py says what readers accept). One push carries
them all; each lane ref is created only if absent or moved only from the tip this rig read, so per item
exactly one of several racing rigs wins, and a lost item does not stop the others in the same push.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from board import lanes, layout
from board import ops as rules
from board.errors import AlreadyClaimed, BoardError, Contention, RuleError, Unreachable, UsageError
from board.ids import fmt_time, utcnow
from board.ops import Op
from board.publish import Chain
from board.results import MutationResult
from board.store import NewObjects
from board.text import sanitize
from board.view import TreeView

if TYPE_CHECKING:
    from board.ledger import State
    from board.service import Board

log = logging.getLogger("wl.board")
PRUNE_AFTER = 600  # seconds a lane that folds to nothing must be old before `wl sync` deletes it
LANE_MEMO = 4096  # folded lanes a rig remembers (by tip and the main blobs they were folded on)
LANE_ATTEMPTS = 8  # a lane moved under us (a renewal, an unclaim): read it again and rebuild, this often


def live_lanes(board: Board) -> dict[str, lanes.Lane]:
    """The board's live lanes (item id → lane) folded on its validated state; a bad lane is warned about once.

    A lane's fold depends only on its tip, the item's record on main and its signers' rig records there, so a
    lane already folded against those same blobs is taken from the rig's memory instead of walked again: a
    fetch that moved main or one lane refolds only the lanes it touched."""
    state = board.state()
    tips = {lanes.item_of(ref, lanes.LOCAL_PREFIX): sha for ref, sha in board.store.refs_under(lanes.LOCAL_PREFIX)}
    key = (state.tree, tuple(sorted((k, v) for k, v in tips.items() if k is not None)))
    cached = board._lane_cache
    if cached is not None and cached[0] == key:
        found: dict[str, lanes.Lane] = cached[1]
        return found
    main = TreeView(board.store, state.tree.encode())
    memo: dict[tuple[str, bytes], tuple[tuple[bytes | None, ...], lanes.Lane]] = board._lane_folds
    out: dict[str, lanes.Lane] = {}
    for item_id, tip in key[1]:
        seen = memo.get((item_id, tip))
        if seen is not None and seen[0] == _fold_inputs(board, main, item_id, seen[1]):
            out[item_id] = seen[1]
            continue
        try:
            lane = lanes.fold(board.store, main, state.board_id, item_id, tip, board.ledger.skew)
        except lanes.LaneProblem as e:
            if (item_id, tip) not in board._lane_warned:
                board._lane_warned.add((item_id, tip))
                log.warning("skipped claim lane %s: %s", item_id, sanitize(str(e)))
            continue
        except Exception:  # noqa: BLE001 - a crafted object on the lane: not a lane, never a failed read
            continue
        if lane is not None:
            out[item_id] = lane
            if len(memo) >= LANE_MEMO:
                memo.clear()
            memo[(item_id, tip)] = (_fold_inputs(board, main, item_id, lane), lane)
    board._lane_cache = (key, out)
    return out


def _fold_inputs(board: Board, main: TreeView, item_id: str, lane: lanes.Lane) -> tuple[bytes | None, ...]:
    """What of main a lane's fold read: the item's record blob and each signer's rig record blob."""
    signers = sorted({op.by for op in lane.ops})
    return (lanes.record_blob(board.store, main.tree, item_id),
            *(lanes.file_blob(board.store, main.tree, layout.rig_path(h)) for h in signers))  # fmt: skip


def track(board: Board, advertised: dict[str, bytes]) -> None:
    """Mirror the lanes the remote advertised under this rig's own refs (which keeps their objects here)."""
    have = {lanes.item_of(ref, lanes.LOCAL_PREFIX): sha for ref, sha in board.store.refs_under(lanes.LOCAL_PREFIX)}
    for item_id, tip in advertised.items():
        if have.get(item_id) != tip and board.store.has(tip):
            board.store.force_ref(lanes.LOCAL_PREFIX + item_id.encode(), tip)
    for gone in have:
        if gone is not None and gone not in advertised:
            board.store.remove_ref(lanes.LOCAL_PREFIX + gone.encode())


def on_lane(board: Board, op: Op) -> bool:
    """Whether this operation goes to its item's lane: every claim on a healthy board, and a renewal or an
    unclaim of a claim that lives on a lane."""
    if op.op not in lanes.LANE_OPS or op.id is None:
        return False
    state = board.state()
    if state.legacy or not board.ledger.healthy(state):
        return False  # a lane builds on the validated main head, which must be the remote's own
    if op.op == "claim":
        return True
    lane = live_lanes(board).get(op.id)
    if op.op == "done":  # a result goes where its claim is: on the lane, when this rig holds it there
        return lane is not None and lane.proof is not None and lane.item.claimed_by == op.by
    return lane is not None


def push(
    board: Board, batch: list[Op], files: dict[str, dict[str, bytes]] | None = None
) -> dict[str, MutationResult | BoardError]:
    """Publish several lane operations (distinct items) in one push; per item, its result or why not.
    `files`: item id → the attachments its `done` carries. A `done` that lands is also kept under this rig's
    refs/wl/results/ until main holds it (board/folds.py).

    The caller holds the home's lock and has just fetched."""
    pending = {op.id: op for op in batch if op.id is not None}
    out: dict[str, MutationResult | BoardError] = {}
    for attempt in range(1, LANE_ATTEMPTS + 1):
        built = _build(board, list(pending.values()), out, files or {})
        if not built:
            break
        new = NewObjects()
        for _, _, chain in built.values():
            new.objects.extend(chain.new.objects)
        updates = {lanes.remote_ref(i): (old, chain.head) for i, (old, _, chain) in built.items()}
        spent = _spent_updates(board, set(built))
        landed = board.remote.push_lanes(board.store, {**updates, **spent}, new)
        if spent:
            _settle_spent(board, landed)
        moved = False
        for item_id, (_, result, chain) in built.items():
            if landed[lanes.remote_ref(item_id)]:
                assert chain.head is not None
                board.store.force_ref(lanes.LOCAL_PREFIX + item_id.encode(), chain.head)
                board.remote.lanes[item_id] = chain.head
                if pending[item_id].op == "done":
                    from board.folds import RESULTS_PREFIX

                    board.store.force_ref(RESULTS_PREFIX + item_id.encode(), chain.head)
                out[item_id] = MutationResult(pending.pop(item_id), result, chain.head.decode(), True, None, attempt)
            else:
                moved = True
        board._lane_cache = None
        if not moved:
            break
        board.retries += 1
        from board.service import _backoff

        _backoff(attempt)  # a winner may still be writing its ref: give it a moment, jittered
        board._fetch()  # whoever won is on the lane now: the rules say so when we rebuild on it
    for item_id in pending:
        out.setdefault(item_id, Contention(board.remote.url, LANE_ATTEMPTS))
    return out


def _build(
    board: Board, batch: list[Op], out: dict[str, MutationResult | BoardError], files: dict[str, dict[str, bytes]],
    persist: bool = True,
) -> dict[str, tuple[bytes | None, dict[str, Any], Chain]]:
    """A signed lane commit per operation the rules accept now; refusals go to `out`. `persist=False`: the
    commits are not written to the store (they stay in each chain's `new`)."""
    state = board.state()
    live = live_lanes(board)
    keys = board._keys()
    origin = state.commit.encode()
    built: dict[str, tuple[bytes | None, dict[str, Any], Chain]] = {}
    for op in batch:
        assert op.id is not None
        lane = live.get(op.id)
        if lane is not None and op.op == "renew" and len(lane.ops) >= lanes.MAX_LANE // 2:
            # a long-running job's lane would outgrow what readers walk: start it afresh on main's head
            op.op, lane = "claim", None
        base = lane.tip if lane is not None else origin
        chain = Chain.on(board.store, state, keys, base, board.store.tree_id(base))
        chain.persist = persist
        if lane is not None and lane.ops:
            chain.at = max(chain.at, lane.ops[-1].at)
        op.at = fmt_time(utcnow())
        if op.op == "done":  # it carries the lane's latest claim, as main's rules and lane readers want
            if lane is None or lane.proof is None:
                out[op.id] = RuleError(f"wanted item {op.id} has no live claim of {op.by} on its lane")
                continue
            op.args["lane"] = lane.proof
        try:
            applied = chain.add(op, files.get(op.id))
        except AlreadyClaimed as e:
            out[op.id] = e
            continue
        except BoardError as e:
            out[op.id] = e if isinstance(e, RuleError) else RuleError(str(e))
            continue
        built[op.id] = (board.remote.lanes.get(op.id), applied.result, chain)
    return built


SPENT = "spent-lanes.json"  # in the home's cache: lanes whose claims main now holds, to delete with a later push


def _spent_path(board: Board) -> Any:
    return board.home.cache_dir / SPENT


def load_spent(board: Board) -> dict[str, str]:
    import orjson

    try:
        data = orjson.loads(_spent_path(board).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str) and lanes.item_of(lanes.remote_ref(k)) == k}


def _save_spent(board: Board, spent: dict[str, str]) -> None:
    import os

    import orjson

    path = _spent_path(board)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SPENT}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(spent))
    os.replace(tmp, path)


def spend(board: Board, item_ids: list[str]) -> None:
    """Remember lanes whose claims a landed `done` carried to main: the rig's next lane push (or `wl sync`)
    deletes them in the same push, so a job costs one lane push and one main push."""
    spent = load_spent(board)
    live = live_lanes(board)
    for item_id in item_ids:
        tip = board.remote.lanes.get(item_id)
        if tip is not None and item_id not in live:  # a lane still live holds a result main lacks: keep it
            spent[item_id] = tip.decode()
    _save_spent(board, spent)


def _spent_updates(board: Board, skip: set[str]) -> dict[bytes, tuple[bytes | None, bytes | None]]:
    """Deletions of the remembered spent lanes that still hold the tip we left (someone else's: not ours)."""
    out: dict[bytes, tuple[bytes | None, bytes | None]] = {}
    live = live_lanes(board)
    for item_id, tip in load_spent(board).items():
        if item_id not in skip and item_id not in live and board.remote.lanes.get(item_id) == tip.encode():
            out[lanes.remote_ref(item_id)] = (tip.encode(), None)
    return out


def _settle_spent(board: Board, landed: dict[bytes, bool]) -> None:
    spent = load_spent(board)
    keep = {}
    for item_id, tip in spent.items():
        ref = lanes.remote_ref(item_id)
        if landed.get(ref):
            board.store.remove_ref(lanes.LOCAL_PREFIX + item_id.encode())
            board.remote.lanes.pop(item_id, None)
        elif board.remote.lanes.get(item_id) == tip.encode():
            keep[item_id] = tip  # still ours to delete: next time
    if keep != spent:
        _save_spent(board, keep)


def flush_spent(board: Board) -> None:
    """Delete the remembered spent lanes now (`wl sync`)."""
    ours = [i for i, tip in load_spent(board).items() if board.remote.lanes.get(i) == tip.encode()]
    drop(board, ours)
    _settle_spent(board, {})  # what drop deleted is gone from remote.lanes, so it is forgotten too


def drop(board: Board, item_ids: list[str]) -> None:
    """Delete lanes whose claims main now holds (best effort: a stale lane is ignored by every reader)."""
    tips = {i: board.remote.lanes.get(i) for i in item_ids}
    updates: dict[bytes, tuple[bytes | None, bytes | None]] = {
        lanes.remote_ref(i): (tip, None) for i, tip in tips.items() if tip is not None
    }
    if not updates:
        return
    try:
        landed = board.remote.push_lanes(board.store, updates, NewObjects())
    except BoardError:
        return
    for item_id in item_ids:
        if landed.get(lanes.remote_ref(item_id)):
            board.store.remove_ref(lanes.LOCAL_PREFIX + item_id.encode())
            board.remote.lanes.pop(item_id, None)
    board._lane_cache = None


FOLD_ATTEMPTS = 8  # a worker's fold of its own lane result: past that, the next rig's mutation carries it


def mutate(board: Board, op: Op, origin: bytes, max_attempts: int, files: dict[str, bytes] | None = None) -> MutationResult:
    """One lane operation, after publishing this rig's pending work on main (which goes first); a `done` is
    submitted as board/folding.py's `submit` does."""
    assert op.id is not None
    report = None
    state = board.ledger.load()
    if board.pending() or (state is not None and state.dropped):
        report, _, _ = board._publish(origin, max_attempts)
    if op.op == "done":
        from board.folding import submit

        result = submit(board, [op], {op.id: files or {}})[op.id]
    else:
        result = push(board, [op], {op.id: files or {}})[op.id]
    if isinstance(result, BoardError):
        raise result
    result.sync = report if report is not None and report.eventful() else None
    return result


def fold_now(board: Board) -> None:
    """Carry the lane results into main now; a fold that cannot land is left to the next one (nothing is lost:
    the results are on their lanes and under refs/wl/results/)."""
    from board.store import ORIGIN_MAIN

    origin = board.store.ref(ORIGIN_MAIN)
    if origin is None:
        return
    try:
        board._publish(origin, FOLD_ATTEMPTS)
    except (Contention, Unreachable) as e:
        log.info("lane results left for a later fold: %s", sanitize(str(e)))


def claim_many(board: Board, item_ids: list[str], lease_seconds: int) -> dict[str, MutationResult | BoardError]:
    """Board.claim_many, under the home's lock."""
    batch = [board.new_op("claim", i, lease_seconds=lease_seconds) for i in dict.fromkeys(item_ids)]
    if board.remote is not None and batch:
        try:
            board._fetch()
            if on_lane(board, batch[0]):
                return push(board, batch)
        except Unreachable:
            pass  # claimed one by one below: locally, to be published by `wl sync`
    out: dict[str, MutationResult | BoardError] = {}
    for op in batch:
        assert op.id is not None
        try:
            out[op.id] = board.mutate(op)
        except BoardError as e:
            out[op.id] = e
    return out


def carry_proof(board: Board, op: Op) -> None:
    """A `done` of an item claimed on its lane carries that claim, so main's rules know it is ours."""
    if op.op != "done" or op.id is None or "lane" in op.args:
        return
    lane = live_lanes(board).get(op.id)
    if lane is not None and lane.proof is not None and lane.item.claimed_by == op.by:
        op.args["lane"] = lane.proof


def precheck(board: Board, op: Op) -> None:
    """An item claimed on its lane is claimed: main's rules cannot see that, so check ours on the view that
    can (a poster does not withdraw, nor a bystander complete, what a worker holds on a lane)."""
    if op.id is None or op.id not in live_lanes(board) or op.op not in rules.RULES:
        return
    rules.apply(board.view(), op, utcnow())


def refuse_offline(board: Board, op: Op, reason: str) -> None:
    if op.op in ("renew", "unclaim") and op.id is not None and op.id in live_lanes(board):
        raise UsageError(
            f"the claim on {op.id} lives on its claim lane on the remote: it is renewed or released only "
            f"online, and here {reason}"
        )


def overlaid(board: Board, view: TreeView, state: State) -> TreeView:
    """Lay the live lanes over a view, where its item records are still those the lanes build on."""
    base = state.tree.encode()
    for item_id, lane in live_lanes(board).items():
        if view.tree == base or lanes.record_blob(board.store, view.tree, item_id) == lanes.record_blob(
            board.store, base, item_id
        ):
            view.overlay[item_id] = lane.item
            view.overlay_files.update(lane.files)
    return view


def prune(board: Board) -> list[str]:
    """Delete the remote's lanes that hold nothing (stale, or not a lane at all) and are older than PRUNE_AFTER
    (a younger one may build on a main commit this rig has not seen yet); returns the items whose lane went.
    Anyone may: such a lane changes no reader's state, and a validating server allows it."""
    import time

    live = live_lanes(board)
    gone = []
    for item_id, tip in board.remote.lanes.items():
        if item_id in live:
            continue
        try:
            when = board.store.commit(tip).commit_time
        except Exception:  # noqa: BLE001 - a ref to a missing object, a blob, a tree: junk, as old as can be
            when = 0
        if time.time() - when >= PRUNE_AFTER:
            gone.append(item_id)
    if gone:
        drop(board, gone)
    return [i for i in gone if i not in board.remote.lanes]


def before_rotation(board: Board) -> dict[str, str]:
    """This rig's live claims on lanes (item id → when the lease ends; results are not claims), for
    `claim_again` once its key rotation lands. Readers are told not to warn about those lanes when the
    rotation leaves them signed by a key the board no longer registers: they are claimed again at once."""
    me = board.handle
    held = {}
    for item_id, lane in live_lanes(board).items():
        if me and lane.item.claimed_by == me and lane.item.status == "claimed" and lane.item.claim_expires_at:
            held[item_id] = lane.item.claim_expires_at
            board._lane_warned.add((item_id, lane.tip))
    return held


def claim_again(board: Board, held: dict[str, str]) -> list[str]:
    """After a key rotation: readers check a lane's commits against the key the board registers now, so this
    rig's lanes signed with its previous key no longer hold its claims. Claim each item again with the
    current key, for the lease it had left, on a fresh lane (compare-and-swap from the stale tip, so a rig that
    claimed it in between keeps it); the items claimed again."""
    from board.ids import parse_time

    now = utcnow()
    out = []
    for item_id, until in sorted(held.items()):
        try:
            left = int((parse_time(until) - now).total_seconds()) + 1
        except ValueError:
            continue
        if left < 2:
            continue  # the lease has run out anyway
        try:
            res = board.mutate(board.new_op("claim", item_id, lease_seconds=left))  # ≤ the lease it had
        except BoardError as e:
            log.info("%s: not claimed again after the key rotation: %s", item_id, sanitize(str(e)))
            continue
        if res.pushed:
            out.append(item_id)
    return out
