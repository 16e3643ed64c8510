"""Claim lanes (board/lanes.py) attacked the way a participant with push access would: lanes signed by the wrong
key, dated in the future, replayed after their item moved on, pointing at commits that are no lane, and a
`done` carrying someone else's lane claim. Readers skip what does not fold, honest claims still go through, a
validating server (`wl hook install`) refuses the bad lane pushes, and a batch of claims in one push wins
exactly the items nobody else holds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dulwich.objects import Blob
from remotes import (
    Rig,
    claims_of,
    join_rig,
    lane_ops,
    make_commons,
    remote_item,
    remote_ops,
    running_git_daemon,
)

from board import commits, lanes, ops
from board.cli.main import cli
from board.errors import AlreadyClaimed
from board.ids import fmt_time, parse_time, utcnow
from board.keys import load_private_key
from board.ops import Op
from board.store import MAIN, NewObjects, Store
from board.treecheck import strict_time
from board.view import TreeView


def _three(tmp_path: Path, url: str) -> tuple[Rig, Rig, Rig]:
    return join_rig(tmp_path, url, "alice"), join_rig(tmp_path, url, "bob"), join_rig(tmp_path, url, "carol")


def forge_lane(commons: Path, signer: Rig, op: Op, parent: bytes | None = None, apply: bool = True) -> bytes:
    """A lane commit written straight into the commons (a raw push), signed by `signer` whatever `op.by` says."""
    store = Store(commons)
    try:
        base = parent or store.ref(MAIN)
        assert base is not None
        tree = store.tree_id(base)
        board_id = TreeView(store, store.tree_id(store.ref(MAIN) or base)).meta()["board_id"]
        new = NewObjects()
        if apply:
            tree = store.build_tree(tree, ops.apply(TreeView(store, tree), op, strict_time(op.at)).changes, new)
        sig = commits.sign(load_private_key(signer.home), board_id, base, tree, op.encode())
        commit = store.commit_tree(base, tree, commits.message(op.encode(), op, sig), op.by, new)
        assert op.id is not None
        store.force_ref(lanes.remote_ref(op.id), commit)
        return commit
    finally:
        store.close()


def claim_op(by: str, item_id: str, at: Any = None) -> Op:
    return Op(op="claim", by=by, at=fmt_time(at or utcnow()), id=item_id, args={"lease_seconds": 1800})


def test_a_lane_signed_by_another_key_is_skipped_and_does_not_block_claims(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item = alice.post("wanted")
    forge_lane(commons, carol, claim_op("bob", item))  # carol signs a claim in bob's name
    with caplog.at_level(logging.WARNING, logger="wl.board"):
        alice.refresh()
        assert alice.item(item).status == "open"
    assert any("skipped claim lane" in r.getMessage() and "not signed by bob" in r.getMessage() for r in caplog.records)
    res = carol.claim(item)  # the junk lane is replaced from the tip it holds: claims still go through
    assert res.pushed and remote_item(commons, item).claimed_by == "carol"
    assert claims_of(commons, item) == ["carol"]


def test_a_lane_dated_in_the_future_or_on_a_commit_that_is_no_lane_is_ignored(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, _ = _three(tmp_path, str(commons))
    early, other = alice.post("early"), alice.post("other")
    forge_lane(commons, bob, claim_op("bob", early, utcnow() + timedelta(days=1)))
    store = Store(commons)
    try:  # a lane ref pointing at main's own head: no lane at all
        head = store.ref(MAIN)
        assert head is not None
        store.force_ref(lanes.remote_ref(other), head)
    finally:
        store.close()
    alice.refresh()
    assert alice.item(early).status == "open" and alice.item(other).status == "open"
    assert alice.claim(early).pushed and alice.claim(other).pushed
    assert remote_item(commons, early).claimed_by == remote_item(commons, other).claimed_by == "alice"


def test_an_old_lane_pushed_back_after_its_item_moved_on_does_not_count(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    store = Store(commons)
    try:
        old = store.ref(lanes.remote_ref(item))
    finally:
        store.close()
    assert old is not None
    bob.done(item, "bob's evidence")  # the done carries the claim to main; the spent lane is dropped
    assert lane_ops(commons, item) == []
    store = Store(commons)
    try:
        store.force_ref(lanes.remote_ref(item), old)  # carol replays bob's old lane
    finally:
        store.close()
    carol.refresh()
    assert carol.item(item).status == "in_review"  # the old lane builds on a record main no longer holds
    assert remote_item(commons, item).status == "in_review"


def test_a_done_carrying_another_rigs_lane_claim_is_excluded(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item = alice.post("x")
    bob.claim(item)
    bob.refresh()
    proof = bob.board().lanes()[item].proof
    assert proof is not None
    store = Store(commons)
    try:  # carol completes with bob's claim as if it were hers: the ledger refuses it
        head = store.ref(MAIN)
        assert head is not None
        tree = store.tree_id(head)
        op = Op(op="done", by="carol", at=fmt_time(utcnow()), id=item,
                args={"evidence": "carol's", "completion_id": "c-" + "1" * 16, "lane": proof})  # fmt: skip
        with pytest.raises(Exception, match="not carol's claim"):
            ops.apply(TreeView(store, tree), op, utcnow())
    finally:
        store.close()
    with pytest.raises(Exception, match="bob"):  # and wl itself refuses: bob holds the item on its lane
        carol.done(item, "carol's")
    assert remote_item(commons, item).claimed_by == "bob"


def test_a_batch_claim_wins_the_free_items_and_names_the_holder_of_the_others(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    items = [alice.post(f"job {n}") for n in range(4)]
    carol.claim(items[1])
    with bob.board() as board:
        results = board.claim_many(items, 600)
    assert [type(results[i]).__name__ for i in items] == ["MutationResult", "AlreadyClaimed", "MutationResult",
                                                          "MutationResult"]  # fmt: skip
    lost = results[items[1]]
    assert isinstance(lost, AlreadyClaimed) and lost.holder == "carol"
    assert [remote_item(commons, i).claimed_by for i in items] == ["bob", "carol", "bob", "bob"]
    assert not [op for _, op in remote_ops(commons) if op is not None and op.op == "claim"]  # main untouched
    for i in (items[0], items[2]):
        bob.done(i, f"result of {i}")
    with bob.board() as board:
        assert sorted(board.lanes()) == sorted([items[1], items[3]])  # spent lanes dropped, live ones kept


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    base = tmp_path / "srv"
    commons = make_commons(base)
    assert CliRunner().invoke(cli, ["hook", "install", str(commons)]).exit_code == 0
    with running_git_daemon(base) as daemon:
        yield commons, daemon.url("commons.git")


@pytest.mark.timeout(120)
def test_a_validating_server_refuses_bad_lanes_and_the_deletion_of_a_live_one(
    hooked: tuple[Path, str], tmp_path: Path
) -> None:
    from board.remote import Remote

    commons, url = hooked
    alice, bob, carol = _three(tmp_path, url)
    item, other = alice.post("x"), alice.post("y")
    res = bob.claim(item)
    assert res.pushed and remote_item(commons, item).claimed_by == "bob"
    with carol.board() as board:  # carol tries to delete bob's live lane, then to push a lane in bob's name
        board.refresh()
        remote = board.remote
        tip = remote.lanes[item]
        landed = remote.push_lanes(board.store, {lanes.remote_ref(item): (tip, None)}, NewObjects())
        assert landed == {lanes.remote_ref(item): False}
        state = board.state()
        forged = claim_op("bob", other)
        base = state.commit.encode()
        tree = board.store.build_tree(board.store.tree_id(base), ops.apply(
            TreeView(board.store, board.store.tree_id(base)), forged, strict_time(forged.at)).changes, new := NewObjects())
        sig = commits.sign(load_private_key(carol.home), state.board_id, base, tree, forged.encode())
        commit = board.store.commit_tree(base, tree, commits.message(forged.encode(), forged, sig), "bob", new)
        landed = Remote(url).push_lanes(board.store, {lanes.remote_ref(other): (None, commit)}, new)
        assert landed == {lanes.remote_ref(other): False}
    store = Store(commons)
    try:  # the server kept bob's lane and took no lane in bob's name
        assert store.ref(lanes.remote_ref(item)) == tip and store.ref(lanes.remote_ref(other)) is None
    finally:
        store.close()
    assert remote_item(commons, item).claimed_by == "bob" and remote_item(commons, other).status == "open"
    assert carol.claim(other).pushed  # honest lanes pass the hook
    bob.done(item, "bob's result")  # and so does dropping a spent lane
    assert lane_ops(commons, item) == [] and remote_item(commons, item).status == "in_review"


def test_sync_prunes_old_lanes_that_hold_nothing_and_keeps_live_ones(tmp_path: Path) -> None:
    import time

    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    junk, young, held, blobbed = alice.post("junk"), alice.post("young"), alice.post("held"), alice.post("blob")
    bob.claim(held)
    store = Store(commons)
    try:  # an hour-old lane ref on a commit that is no lane, and a fresh one
        head = store.ref(MAIN)
        assert head is not None
        old = store.commit_tree(head, store.tree_id(head), "not a lane\n", "mallory", NewObjects(),
                                when=time.time() - 3600)  # fmt: skip
        store.force_ref(lanes.remote_ref(junk), old)
        store.force_ref(lanes.remote_ref(young), head)
        blob = Blob.from_string(b"not a commit at all")
        store.objects.add_object(blob)
        store.force_ref(lanes.remote_ref(blobbed), blob.id)  # a raw push of a lane ref naming a blob
    finally:
        store.close()
    carol.sync()
    store = Store(commons)
    try:
        assert store.ref(lanes.remote_ref(junk)) is None  # pruned
        assert store.ref(lanes.remote_ref(blobbed)) is None  # and so is a ref that names no commit
        assert store.ref(lanes.remote_ref(young)) is not None  # too young to judge
        assert store.ref(lanes.remote_ref(held)) is not None  # bob's live claim stays
    finally:
        store.close()
    assert remote_item(commons, held).claimed_by == "bob"


def test_a_long_running_claims_lane_starts_afresh_before_readers_would_stop_walking_it(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, _ = _three(tmp_path, str(commons))
    item = alice.post("a long job")
    bob.claim(item)
    lengths = []
    for _ in range(lanes.MAX_LANE // 2 + 1):
        bob.op("renew", item, lease_seconds=1800)
        lengths.append(len(lane_ops(commons, item)))
    half = lanes.MAX_LANE // 2
    assert lengths == [*range(2, half + 1), 1, 2]  # at half the walk it restarts on main's head with a claim
    assert [(o.op, o.by) for o in lane_ops(commons, item)] == [("claim", "bob"), ("renew", "bob")]
    assert remote_item(commons, item).claimed_by == "bob"
    assert claims_of(commons, item) == ["bob"]
    bob.done(item, "finally")
    assert remote_item(commons, item).status == "in_review"


def test_a_spent_lane_goes_out_with_the_rigs_next_claim_or_its_sync(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob, _ = _three(tmp_path, str(commons))
    first, second, third = alice.post("1"), alice.post("2"), alice.post("3")

    def lane_ref(item_id: str) -> bytes | None:
        store = Store(commons)
        try:
            return store.ref(lanes.remote_ref(item_id))
        finally:
            store.close()

    bob.claim(first)
    bob.done(first, "one")
    assert lane_ref(first) is not None and remote_item(commons, first).status == "in_review"  # spent, not read
    bob.claim(second)  # the push that claims the next item deletes the spent lane
    assert lane_ref(first) is None and lane_ref(second) is not None
    bob.done(second, "two")
    bob.sync()  # or a sync does
    assert lane_ref(second) is None
    bob.claim(third)
    assert remote_item(commons, third).claimed_by == "bob" and claims_of(commons, third) == ["bob"]


def test_a_long_lived_reader_refolds_a_lane_whose_signer_rotated_its_key(tmp_path: Path) -> None:
    """A worker keeps its folded lanes across fetches (keyed by the lane tip, the item's main record and the
    signers' rig records); when the claimer's rig record changes on main, the long-lived reader must see
    what a fresh reader sees."""
    commons = make_commons(tmp_path)
    alice, bob, carol = _three(tmp_path, str(commons))
    item = alice.post("wanted")
    assert bob.claim(item).pushed
    with carol.board() as long_lived:
        long_lived.refresh()
        assert long_lived.get_item(item).claimed_by == "bob"
        _rotate_without_claiming_again(bob)  # what `wl rig rotate-key` does before it claims again
        long_lived.refresh()
        seen = long_lived.get_item(item)
    fresh = join_rig(tmp_path, str(commons), "dave")
    expected = fresh.item(item)
    assert (seen.status, seen.claimed_by) == (expected.status, expected.claimed_by) == ("open", None)


def _rotate_without_claiming_again(rig: Rig) -> None:
    from board.keys import commit_rotation, new_key_for_rotation, rotation_message, sign_rotation

    with rig.board() as b:
        old, new = new_key_for_rotation(rig.home)
        proof = sign_rotation(load_private_key(rig.home), rotation_message(b.view().meta()["board_id"], rig.handle, old, new))
        assert b.mutate(b.new_op("rotate-key", None, old_address=old, new_address=new, proof=proof)).pushed
    commit_rotation(rig.home)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("validating", [False, True], ids=["plain", "hook"])
def test_a_rig_that_rotates_its_key_claims_its_lane_items_again_for_the_lease_left(
    tmp_path: Path, validating: bool
) -> None:
    """Readers check lane commits against the key the board registers now, so a rotation alone would drop the
    rig's claims on lanes (its items would read open). `wl rig rotate-key` claims them again with the new key,
    for the lease each had left, and the rig's result on one still lands; an item whose lease has run out is
    left to whoever claims it."""
    import time

    import orjson

    base = tmp_path / "srv"
    commons = make_commons(base)
    if validating:
        assert CliRunner().invoke(cli, ["hook", "install", str(commons)]).exit_code == 0
    alice, bob, carol = _three(tmp_path, str(commons))
    item, other, short = alice.post("x"), alice.post("y"), alice.post("z")
    assert bob.claim(item, lease_seconds=900).pushed and bob.claim(other, lease_seconds=900).pushed
    assert bob.claim(short, lease_seconds=2).pushed
    until = remote_item(commons, item).claim_expires_at
    time.sleep(2.5)  # `short`'s lease ends
    res = CliRunner().invoke(cli, ["--home", str(bob.home), "--json", "rig", "rotate-key"])
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.stdout)
    assert data["committed"] and data["claimed_again"] == sorted([item, other])
    fresh = join_rig(tmp_path, str(commons), "dave")  # what any reader sees now
    for i in (item, other):
        seen = fresh.item(i)
        assert (seen.status, seen.claimed_by) == ("claimed", "bob")
        assert seen.claim_expires_at is not None and until is not None
        assert abs((parse_time(seen.claim_expires_at) - parse_time(until)).total_seconds()) <= 3
    assert fresh.item(short).status == "open"
    with pytest.raises(AlreadyClaimed):
        carol.claim(item)
    assert carol.claim(short).pushed
    assert bob.done(item, "bob's result, signed with the new key").pushed
    assert remote_item(commons, item).status == "in_review"


def test_maintenance_folds_the_small_packs_fetches_leave_and_keeps_every_object(tmp_path: Path) -> None:
    from board.store import SMALL_PACK, SMALL_PACKS

    store = Store.init_bare(tmp_path / "repo.git")
    try:
        big = [Blob.from_string(f"big {i}".encode()) for i in range(SMALL_PACK + 1)]
        store.objects.add_objects([(b, None) for b in big])
        small = [[Blob.from_string(f"small {k} {i}".encode()) for i in range(3)] for k in range(SMALL_PACKS + 3)]
        for group in small:
            store.objects.add_objects([(b, None) for b in group])
        assert len(list(store.objects.packs)) == SMALL_PACKS + 4
        store.maintain()
        packs = sorted(len(p) for p in store.objects.packs)
        assert packs == [3 * (SMALL_PACKS + 3), SMALL_PACK + 1]  # the small ones folded, the big one untouched
        for blob in [big[0], big[-1], *(b for g in small for b in g)]:
            assert store.raw(blob.id)[1] == blob.as_raw_string()
        folded = {p.name() for p in store.objects.packs}
        tiny = [Blob.from_string(f"tiny {i}".encode()) for i in range(SMALL_PACKS + 1)]
        for blob in tiny:
            store.objects.add_objects([(blob, None)])
        store.maintain()  # geometric: the tiny ones fold together, the pack twice their size is not rewritten
        assert folded <= {p.name() for p in store.objects.packs}
        assert sorted(len(p) for p in store.objects.packs) == [SMALL_PACKS + 1, 3 * (SMALL_PACKS + 3), SMALL_PACK + 1]
        assert all(store.raw(b.id)[1] == b.as_raw_string() for b in tiny)
    finally:
        store.close()
    again = Store(tmp_path / "repo.git")  # and a fresh reader finds the same
    try:
        assert again.raw(small[0][0].id)[1] == small[0][0].as_raw_string()
        assert len(list((tmp_path / "repo.git" / "objects" / "pack").glob("*.pack"))) == 3
    finally:
        again.close()
