"""Results on lanes (board/folds.py), attacked the way a participant with push access would.

A worker's `done` is folded into main at once when main did not move, else it goes onto its item's lane; a
signed `fold` commit carries lane results into main. Readers
see a lane result as in review before any fold; any rig's next mutation of main folds what is left; a fold
that forges a result's signature, replays a folded result or smuggles a blob is excluded and repaired; a
validating server keeps a lane that holds a result from being deleted or replaced; and a worker whose lane
was deleted by a server that does not validate still folds its result from its own copy."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remotes import Rig, join_rig, main_ops, make_commons, remote_item, remote_ops, running_git_daemon

from board import claims, commits, lanes, ops
from board.cli.main import cli
from board.folding import MAX_DEFER, Courtesy
from board.folds import RESULTS_PREFIX
from board.ids import fmt_time, new_completion_id, utcnow
from board.keys import load_private_key
from board.layout import blob_path
from board.ops import Op
from board.results import MutationResult
from board.store import MAIN, NewObjects, Store
from board.treecheck import strict_time
from board.view import TreeView


def _three(tmp_path: Path, url: str) -> tuple[Rig, Rig, Rig]:
    return join_rig(tmp_path, url, "alice"), join_rig(tmp_path, url, "bob"), join_rig(tmp_path, url, "carol")


def lane_result(rig: Rig, item_id: str, evidence: str, blob: bytes | None = None) -> MutationResult:
    """Put the rig's `done` onto the item's lane and stop there (no fold): what a worker leaves when its
    fold push loses every race or it is killed right after the lane push."""
    files = {blob_path(hashlib.sha256(blob).hexdigest()): blob} if blob is not None else {}
    with rig.board() as b, b._lock():
        b._fetch()
        op = b.new_op("done", item_id, evidence=evidence, completion_id=new_completion_id())
        res = claims.push(b, [op], {item_id: files})[item_id]
    assert isinstance(res, MutationResult), res
    return res


def wl(rig: Rig, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(rig.home), *args])
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result.exit_code, result.stdout + result.stderr


def folds(commons: Path) -> list[Op]:
    return [op for _, op in remote_ops(commons) if op is not None and op.op == "fold"]


def test_a_done_is_submitted_with_one_fold_on_main_when_nobody_moved_main(tmp_path: Path) -> None:
    """Uncontended, the result is signed on a lane commit that is never pushed and folded straight into main:
    one push. (When main moved, it goes onto its lane first: the worker tests cover that.)"""
    commons = make_commons(tmp_path)
    alice, bob, _ = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    before = len(remote_ops(commons))
    bob.done(item, "bob's result")
    new = [op for _, op in remote_ops(commons)[before:]]
    assert [op.op if op else None for op in new] == ["fold"]  # one main commit, by the worker, for its result
    [done] = [op for op in main_ops(commons) if op.op == "done"]
    assert done.by == "bob" and done.id == item and done.args["lane"]["op"]  # the claim it carries from the lane
    with alice.board() as b:
        b.refresh()
        comp = b.view().completion(item)
        assert comp is not None and comp.completed_by == "bob" and comp.evidence == "bob's result"
        assert b.view().item(item).status == "in_review"
    with bob.board() as b:
        assert list(b.store.refs_under(RESULTS_PREFIX)) == []  # main holds it: the worker's copy is let go


def test_a_result_left_on_its_lane_reads_in_review_and_the_next_mutation_of_anyone_folds_it(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item, other = alice.post("x"), alice.post("y")
    bob.claim(item)
    output = b"the generated text\n"
    lane_result(bob, item, "bob's result", output)
    assert not [op for op in main_ops(commons) if op.op == "done"]
    with alice.board() as b:  # the poster sees the result, its completion and its blob before any fold
        b.refresh()
        view = b.view()
        assert view.item(item).status == "in_review"
        comp = view.completion(item)
        assert comp is not None and comp.completed_by == "bob"
        assert view.blob(hashlib.sha256(output).hexdigest()) == output
    carol.claim(other)  # a lane push: main is untouched
    assert not folds(commons)
    code, out = wl(alice, "accept", item, "--quality", "4")  # the poster's accept folds bob's result first, then accepts it
    assert code == 0, out
    assert [op.op for _, op in remote_ops(commons)[-2:] if op] == ["fold", "accept"]
    assert remote_item(commons, item).status == "completed"
    [fold] = folds(commons)
    assert fold.by == "alice" and fold.attachments == [blob_path(hashlib.sha256(output).hexdigest())]


def test_one_fold_carries_several_workers_results_and_the_losers_have_nothing_left_to_do(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    first, second = alice.post("1"), alice.post("2")
    bob.claim(first)
    carol.claim(second)
    lane_result(bob, first, "bob's")
    lane_result(carol, second, "carol's")
    report = bob.sync()  # bob's fold carries carol's result too
    assert sorted(report.folded) == sorted([first, second])
    before = len(remote_ops(commons))
    report = carol.sync()  # carol finds hers carried: no second fold
    assert report.folded == [] and len(remote_ops(commons)) == before
    assert remote_item(commons, first).status == remote_item(commons, second).status == "in_review"
    with carol.board() as b:
        assert list(b.store.refs_under(RESULTS_PREFIX)) == []


def _raw_fold(commons: Path, signer: Rig, entries: list[dict[str, str]], blobs: dict[str, bytes],
              changes: dict[str, bytes | None]) -> bytes:
    """A fold commit written straight onto the commons' main, signed by `signer` over whatever it claims."""
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        tree = store.tree_id(head)
        board_id = TreeView(store, tree).meta()["board_id"]
        op = Op(op="fold", by=signer.handle, at=fmt_time(utcnow()), args={"results": entries},
                attachments=sorted(blobs))
        new = NewObjects()
        tree = store.build_tree(tree, {**changes, **blobs}, new)
        sig = commits.sign(load_private_key(signer.home), board_id, head, tree, op.encode())
        commit = store.commit_tree(head, tree, commits.message(op.encode(), op, sig), signer.handle, new)
        assert store.set_ref(MAIN, commit, head)
        return commit
    finally:
        store.close()


def _lane_entry(commons: Path, item_id: str) -> tuple[dict[str, str], Op, dict[str, bytes | None]]:
    """The item's lane result as a fold carries it, its `done`, and the changes main's rule makes of it."""
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        tip = store.ref(lanes.remote_ref(item_id))
        assert head is not None and tip is not None
        view = TreeView(store, store.tree_id(head))
        lane = lanes.fold(store, view, view.meta()["board_id"], item_id, tip)
        assert lane is not None and lane.done is not None
        inner = commits.parse_op_json(lane.done["op"])
        changes = ops.apply(view, inner, strict_time(inner.at)).changes
        return lane.done, inner, changes
    finally:
        store.close()


@pytest.mark.parametrize("attack", ["forged signature", "replayed result", "smuggled blob"])
def test_a_hostile_fold_is_excluded_and_the_commons_heals(tmp_path: Path, attack: str) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    if attack == "replayed result":  # the result a later second than the claim: the item's life moved past the claim
        start = int(time.time())
        while int(time.time()) == start:
            time.sleep(0.05)
    lane_result(bob, item, "bob's result")
    entry, inner, changes = _lane_entry(commons, item)
    blobs: dict[str, bytes] = {}
    reason = ""
    if attack == "forged signature":  # carol signs bob's done herself: a different evidence in bob's name
        inner.args["evidence"] = "carol's words in bob's mouth"
        with bob.board() as b:
            view = TreeView(b.store, b.store.tree_id(b.store.ref(MAIN) or b""))
            board_id = view.meta()["board_id"]
            changes = ops.apply(view, inner, strict_time(inner.at)).changes
        parent, tree = entry["parent"].encode(), entry["tree"].encode()
        entry = {**entry, "op": inner.encode(), "sig": commits.sign(load_private_key(carol.home), board_id, parent,
                                                                     tree, inner.encode())}  # fmt: skip
        reason = "not signed by bob's registered key"
    elif attack == "replayed result":  # bob's result folded honestly, then carried again
        bob.sync()
        changes = {}
        reason = "in_review"
    else:  # an honest result, plus a blob no result carries
        junk = b"not part of any result\n"
        blobs = {blob_path(hashlib.sha256(junk).hexdigest()): junk}
        reason = "exactly the blobs"
    bad = _raw_fold(commons, carol, [entry], blobs, changes)
    code, out = wl(alice, "sync")
    assert code == 1 and bad.decode()[:12] in out and reason in out, out
    if attack == "forged signature":
        comp_after = None
        with alice.board() as b:
            b.refresh()
            comp_after = b.view().completion(item)
        assert comp_after is not None and comp_after.evidence == "bob's result"  # bob's real result, on its lane
    bob.sync()  # bob's real result lands (the excluded commit stays in the raw history, refused)
    alice.post("next")  # and after the next honest mutation the commons is healthy again
    code, out = wl(alice, "sync")
    assert code == 0, out
    dones = [op for op in main_ops(commons) if op.op == "done" and op.id == item]
    assert dones[-1].args["evidence"] == "bob's result"
    with alice.board() as b:
        b.refresh()
        comp = b.view().completion(item)
        assert comp is not None and comp.evidence == "bob's result" and b.state().commit == b.head().decode()
        assert b.ledger.healthy(b.state())


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    commons = make_commons(tmp_path / "srv")
    result = CliRunner().invoke(cli, ["hook", "install", str(commons)])
    assert result.exit_code == 0, result.output
    with running_git_daemon(tmp_path / "srv") as daemon:
        yield commons, daemon.url("commons.git")


def test_a_validating_server_keeps_a_lane_that_holds_a_result_or_a_live_claim(
    hooked: tuple[Path, str], tmp_path: Path
) -> None:
    commons, url = hooked
    alice, bob, carol = _three(tmp_path, url)
    item, other = alice.post("x"), alice.post("y")
    bob.claim(item)
    bob.claim(other)
    lane_result(bob, item, "bob's result")
    with carol.board() as board:
        board.refresh()
        remote = board.remote
        tip, held = remote.lanes[item], remote.lanes[other]
        landed = remote.push_lanes(board.store, {lanes.remote_ref(item): (tip, None)}, NewObjects())
        assert landed == {lanes.remote_ref(item): False}  # deleting a result main lacks: refused
        state = board.state()
        for target, old in ((item, tip), (other, held)):  # replacing either lane with carol's own claim
            claim = Op(op="claim", by="carol", at=fmt_time(utcnow()), id=target, args={"lease_seconds": 1800})
            base = state.commit.encode()
            view = TreeView(board.store, board.store.tree_id(base))
            new = NewObjects()
            tree = board.store.build_tree(view.tree, ops.apply(view, claim, strict_time(claim.at)).changes, new)
            sig = commits.sign(load_private_key(carol.home), state.board_id, base, tree, claim.encode())
            commit = board.store.commit_tree(base, tree, commits.message(claim.encode(), claim, sig), "carol", new)
            landed = remote.push_lanes(board.store, {lanes.remote_ref(target): (old, commit)}, new)
            assert landed == {lanes.remote_ref(target): False}, target
    assert remote_item(commons, item).status == "in_review" and remote_item(commons, other).claimed_by == "bob"
    bob.sync()
    assert [op.by for op in main_ops(commons) if op.op == "done"] == ["bob"]


def test_a_result_whose_lane_was_deleted_is_folded_from_the_workers_own_copy(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)  # a plain bare repository: it validates nothing
    alice, bob, _ = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    lane_result(bob, item, "bob's result", b"output\n")
    store = Store(commons)
    try:  # someone with push access deletes the lane before any fold
        store.remove_ref(lanes.remote_ref(item))
    finally:
        store.close()
    assert remote_item(commons, item).status == "open"
    report = bob.sync()
    assert report.folded == [item]
    assert remote_item(commons, item).status == "in_review"
    comp: Any
    with alice.board() as b:
        b.refresh()
        comp = b.view().completion(item)
        assert b.view().blob(hashlib.sha256(b"output\n").hexdigest()) == b"output\n"
    assert comp is not None and comp.evidence == "bob's result"


def test_a_courteous_rig_leaves_its_result_on_its_lane_while_others_move_main_and_folds_once_main_is_quiet(
    tmp_path: Path,
) -> None:
    """A long-running worker's fold manners (board/folding.Courtesy), on a clock the test turns: main moved by
    someone else since its last fetch, so its `done` goes onto the lane with no try at main at all; a sync while
    main has been quiet for less than the quiet time folds nothing; once it has been quiet for twice that, the
    next sync folds it. A rig without manners (a one-shot `wl done`) folds at once in the same spot."""
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item, other = alice.post("x"), alice.post("y")
    bob.claim(item)
    carol.claim(other)
    now = [1000.0]
    with bob.board() as b:
        b.courtesy = Courtesy(quiet=1.0, clock=lambda: now[0])
        b.refresh()  # the baseline
        alice.post("z")  # someone else moves main
        b.refresh()
        before = len(remote_ops(commons))
        res = b.mutate(b.new_op("done", item, evidence="bob's", completion_id=new_completion_id()))
        assert res.pushed and b.retries == 0  # submitted on its lane; no fold raced anyone for main
        assert len(remote_ops(commons)) == before
        now[0] += 0.5
        assert b.sync().folded == [] and len(remote_ops(commons)) == before
        with alice.board() as a:
            a.refresh()
            assert a.view().item(item).status == "in_review"
        now[0] += 1.6  # quiet for 2.1 s: past the quiet time times any factor up to 2
        assert b.sync().folded == [item]
    assert [op.by for op in folds(commons)] == ["bob"]
    alice.post("w")  # main moves again; carol has no manners
    carol.done(other, "carol's")
    assert [op.by for op in folds(commons)] == ["bob", "carol"]
    assert sorted(str(op.id) for op in main_ops(commons) if op.op == "done") == sorted([item, other])


def test_fold_manners_defer_at_most_max_defer_quiet_periods_while_main_never_rests() -> None:
    """Main moving again before every look must not keep a result off main for ever: a result of ours waiting
    on its lane for MAX_DEFER times the quiet time is folded. The count starts afresh once none waits."""
    now = [0.0]
    manners = Courtesy(quiet=1.0, clock=lambda: now[0])
    assert manners.defer("bob", ["x"]) is False  # no move seen yet: fold
    manners.fetched(True)  # the first fetch is the baseline only
    assert manners.defer("bob", ["x"]) is False
    looks: list[bool] = []
    while len(looks) < 40 and (not looks or looks[-1]):
        now[0] += 0.5
        manners.fetched(True)
        looks.append(manners.defer("bob", ["x"]))
    assert looks[-1] is False and all(looks[:-1]) and now[0] == MAX_DEFER  # waiting since 0: folded at 10 s
    manners.defer("bob", [])  # it landed: nothing of ours waits
    now[0] += 0.5
    manners.fetched(True)
    assert manners.defer("bob", ["y"]) is True  # a new result of ours: deferred, counting from here
    now[0] += 2.0  # 2 s later, but nobody looked: main may have moved meanwhile
    assert manners.defer("bob", ["y"]) is True
    manners.fetched(False)  # a fetch finds main as it was 2 s ago: quiet for twice the quiet time, fold
    assert manners.defer("bob", ["y"]) is False


def test_fold_manners_never_force_a_fold_while_other_folds_carry_each_result_in_time() -> None:
    """A worker that submits a result every second, each carried by the busy folder within 2 s, always has one
    waiting: that is no result waiting for MAX_DEFER quiet periods, and it never races the folder."""
    now = [0.0]
    manners = Courtesy(quiet=1.0, clock=lambda: now[0])
    manners.fetched(False)
    looks = []
    for k in range(1, 4 * MAX_DEFER):
        now[0] += 0.5
        manners.fetched(True)  # the folder moves main every half second
        waiting = [f"r{j}" for j in range(max(0, k // 2 - 2), k // 2 + 1)]  # submitted each second, gone 2 s later
        looks.append(manners.defer("bob", waiting))
    assert all(looks)


def test_fold_manners_wait_longer_behind_a_folder_whose_jobs_are_long() -> None:
    """The quiet time follows the gaps between the moves a rig saw: behind a folder that moves main every 3 s
    (its jobs take that long), 2.5 s without a move is no quiet period, as it would be with a 1 s quiet time;
    a first look at a board others work on (live lanes) waits a quiet period before folding."""
    now = [0.0]
    manners = Courtesy(quiet=1.0, clock=lambda: now[0])
    manners.fetched(False)
    for _ in range(6):
        now[0] += 3.0
        manners.fetched(True)
    now[0] += 2.5
    manners.fetched(False)
    assert manners.defer("bob", []) is True
    now[0] += 10.0
    manners.fetched(False)
    assert manners.defer("bob", []) is False  # 12.5 s: quiet by any factor
    first = Courtesy(quiet=1.0, clock=lambda: now[0])
    first.fetched(True, at=fmt_time(utcnow()))  # the first fetch is a baseline, however new main's last commit
    assert first.defer("bob", ["x"]) is False


def test_fold_manners_go_by_when_main_last_moved_not_by_when_the_rig_looked() -> None:
    """A worker fetches only between jobs: after a 30 s job it finds main moved, and the time of main's last
    operation says whether that was 5 s ago (quiet: fold) or just now (a folder at work: leave it to them)."""
    for ago, defers in ((5, False), (0, True)):
        clock = [0.0]
        manners = Courtesy(quiet=1.0, clock=lambda c=clock: c[0])
        manners.fetched(False)
        clock[0] += 30.0
        manners.fetched(True, at=fmt_time(utcnow() - timedelta(seconds=ago)))
        assert manners.defer("bob", ["x"]) is defers, ago


def test_a_courteous_rig_lets_go_of_its_copy_of_a_result_another_fold_carried_and_only_that_one(
    tmp_path: Path,
) -> None:
    """Once main holds the very completion a kept lane result of ours names, the manners let our copy go (it is
    no longer waiting); a copy that names another completion (here: a commit that is not that `done`) waits."""
    from board.folding import deferring

    commons = make_commons(tmp_path)
    alice, bob, _ = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    lane_result(bob, item, "bob's result")
    with bob.board() as b:
        [(ref, done_sha)] = list(b.store.refs_under(RESULTS_PREFIX))
        claim_sha = b.store.commit(done_sha).parents[0]
    assert alice.sync().folded == [item]  # alice's fold carries bob's result
    with bob.board() as b:
        b.courtesy = Courtesy(quiet=1.0, clock=lambda: 0.0)
        b.refresh()
        b.store.force_ref(ref, claim_sha)  # a kept copy that is not the completion main holds
        deferring(b)
        assert [r for r, _ in b.store.refs_under(RESULTS_PREFIX)] == [ref]
        b.store.force_ref(ref, done_sha)  # the very result main holds
        deferring(b)
        assert list(b.store.refs_under(RESULTS_PREFIX)) == []
