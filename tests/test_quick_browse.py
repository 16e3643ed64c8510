"""A warm `wl browse` from the index alone (board/quick.py): the same answer as the full path, never a stale one.

Real `wl` processes on real homes (bare commons on disk, rigs through board.service). That the warm answer
skipped git is observed through `python -X importtime` (dulwich and board.service are not imported); that it
is right is observed by comparing it with the full path's answer after each kind of change a view is made of:
main moving on a fetch, a local unpushed commit, a claim lane, the index synced to another tree by another
reader, refs packed by git; and the skipped entries and warnings of a crafted tree, replayed as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hostile_git import Mallory
from remotes import GIT, WL, Rig, join_rig, make_commons
from test_hostile_entries import craft_everything

from board import quick
from board.home import Home
from board.index import Query
from board.service import Board
from board.store import MAIN, Store
from board.view import TreeView


def wl(home: Path, *args: str, importtime: bool = False) -> tuple[str, str, set[str]]:
    """stdout, stderr (without import lines) and the modules the process imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
    env["WL_HOME"] = str(home)
    argv = [sys.executable, "-X", "importtime", WL] if importtime else [WL]
    res = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    modules = {ln.rsplit("|", 1)[1].strip() for ln in lines if ln.startswith("import time:") and "|" in ln}
    rest = "".join(ln + "\n" for ln in lines if not ln.startswith("import time:"))
    return res.stdout, rest, modules


def full_answer(home: Path, q: Query) -> tuple[list[str], int, list[str]]:
    """What the full path (board.service, the ledger's state, the lanes) lists, in-process."""
    with Board(Home(home)) as board:
        view = board.view()
        res = view.query(q)
        return [f"{i.id}:{i.status}" for i in res.items], res.total, view.corrupt


def listed(home: Path, *args: str) -> tuple[list[str], int, list[str], set[str]]:
    out, _, modules = wl(home, "--json", "browse", *args, importtime=True)
    doc = json.loads(out)
    return [f"{i['id']}:{i['status']}" for i in doc["items"]], doc["total"], doc["corrupt"], modules


def board_of(tmp_path: Path) -> tuple[Rig, Rig, list[str]]:
    commons = make_commons(tmp_path / "srv")
    alice, bob = join_rig(tmp_path, str(commons), "alice"), join_rig(tmp_path, str(commons), "bob")
    ids = [alice.post(f"item {k}", priority=k % 3, tags=["gpu"] if k % 2 else []) for k in range(5)]
    alice.refresh()
    return alice, bob, ids


def test_a_warm_browse_needs_no_git_and_prints_what_the_full_path_printed(tmp_path: Path) -> None:
    alice, _, ids = board_of(tmp_path)
    cold_out, cold_err, cold_modules = wl(alice.home, "browse", importtime=True)
    assert "dulwich" in cold_modules  # the first answer reads the board
    warm_out, warm_err, warm_modules = wl(alice.home, "browse", importtime=True)
    assert (warm_out, warm_err) == (cold_out, cold_err) and all(i in warm_out for i in ids)
    assert not {"dulwich", "board.service", "board.ledger", "importlib.metadata", "rich"} & warm_modules
    for args in ((), ("--status", "all"), ("--tag", "gpu"), ("--mine",), ("--priority", "1", "--limit", "1")):
        q = Query(status=None if args[:2] == ("--status", "all") else "open", tags=("gpu",) if "--tag" in args else (),
                  involves="alice" if "--mine" in args else None, priority=1 if "--priority" in args else None,
                  limit=1 if "--limit" in args else 50)
        items, total, corrupt, modules = listed(alice.home, *args)
        assert (items, total, corrupt) == full_answer(alice.home, q), args
        assert "dulwich" not in modules, args


def test_every_change_a_view_is_made_of_is_seen(tmp_path: Path) -> None:
    alice, bob, ids = board_of(tmp_path)
    listed(alice.home)
    listed(alice.home)

    def check(what: str, expect: str) -> None:
        items, total, corrupt, _ = listed(alice.home, "--status", "all")
        assert expect in items, what
        assert (items, total, corrupt) == full_answer(alice.home, Query(status=None)), what

    fresh = bob.post("posted by bob")
    alice.refresh()  # main and the ledger's state move on a fetch
    check("a fetched post", f"{fresh}:open")
    local = alice.post("not pushed yet", push=False)  # main moves, the validated state does not
    check("a local commit", f"{local}:open")
    alice.sync()
    bob.claim(ids[0])  # a claim lane on the commons ...
    alice.refresh()  # ... mirrored under this rig's refs/wl/lanes/
    check("a claim lane", f"{ids[0]}:claimed")
    bob.op("unclaim", ids[0])
    alice.refresh()
    check("a lane released", f"{ids[0]}:open")

    store = Store(alice.home / "board.git")  # another reader syncs the index to an older tree
    try:
        head = store.ref(MAIN)
        assert head is not None
        old = store.commit(head).parents[0]
        TreeView(store, store.tree_id(old), alice.home / "cache" / "items.json").query(Query(status=None))
    finally:
        store.close()
    check("the index synced to another tree", f"{local}:open")

    assert GIT is not None
    subprocess.run([GIT, "-C", str(alice.home / "board.git"), "pack-refs", "--all"], check=True)
    assert not (alice.home / "board.git" / "refs" / "heads" / "main").exists()
    check("packed refs", f"{local}:open")
    _, _, _, modules = listed(alice.home, "--status", "all")
    assert "dulwich" not in modules  # packed refs are read too
    late = bob.post("after packing")
    alice.refresh()
    check("a fetch after packing", f"{late}:open")


def test_skipped_entries_and_warnings_are_replayed_as_the_full_read_gave_them(tmp_path: Path) -> None:
    """A validated state never holds a crafted entry (the ledger and the checkpoint refuse them), so the replay
    is checked on the reader itself: a view of a crafted tree syncs the home's index, and the answer from its
    record names every skipped entry and repeats every warning, in the same order."""
    alice, _, ids = board_of(tmp_path)
    commons = tmp_path / "srv" / "commons.git"
    used = {i[2:4] for i in ids}
    free = [f"{x:02x}" for x in range(256) if f"{x:02x}" not in used][:8]
    expected = craft_everything(Mallory(commons, tmp_path / "mallory.git"), free, ids[0])
    home = Home(alice.home)
    q = Query(status=None)
    before = quick.stamp(home)
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        view = TreeView(store, store.tree_id(head), home.cache_dir / "items.json")
        with quick.Capture().on() as full:
            res = view.query(q)
    finally:
        store.close()
    assert {p for p in expected if p.startswith("wanted/")} <= set(view.corrupt) and full.seen
    quick.record(home, before, view, q, full.seen)
    with quick.Capture().on() as warm:
        answer = quick.answer(home, q)
    assert answer is not None
    assert [i.id for i in answer.result.items] == [i.id for i in res.items] and answer.result.total == res.total
    assert answer.corrupt == view.corrupt and warm.seen == full.seen
    alice.post("moves main")  # and once the home moves on, the record answers nothing
    assert quick.answer(home, q) is None


def test_status_counts_and_lists_from_the_index_are_what_a_full_read_gives(tmp_path: Path) -> None:
    from board.records import STATUSES

    alice, bob, ids = board_of(tmp_path)
    bob.claim(ids[0])  # on its lane
    bob.claim(ids[1])
    bob.done(ids[1], "did it")
    bob.claim(ids[3])
    alice.op("delete", ids[2])
    for rig in (alice, bob):
        rig.refresh()
        out, _, _ = wl(rig.home, "--json", "status")
        doc = json.loads(out)
        with Board(Home(rig.home)) as board:
            items = board.view().items()
        me = rig.handle
        assert doc["counts"] == {s: sum(1 for i in items if i.status == s) for s in STATUSES}
        assert doc["total"] == len(items) == 5
        held = sorted((i for i in items if i.claimed_by == me and i.status == "claimed"),
                      key=lambda i: (i.claim_expires_at or "", i.id))
        assert [c["id"] for c in doc["my_claims"]] == [i.id for i in held]
        assert [c["id"] for c in doc["to_review"]] == [i.id for i in items if i.posted_by == me
                                                       and i.status == "in_review"]
        assert [c["id"] for c in doc["awaiting_review"]] == [i.id for i in items if i.claimed_by == me
                                                             and i.status == "in_review"]
    assert json.loads(wl(bob.home, "--json", "status")[0])["my_claims"] != []
    assert json.loads(wl(alice.home, "--json", "status")[0])["to_review"] != []


def test_a_refused_lane_is_never_answered_from_a_record(tmp_path: Path) -> None:
    """A lane dated ahead of the clock is refused now and may fold later: its browse is never recorded, so
    every browse reads the lanes again and warns again."""
    from datetime import timedelta

    from test_lanes import claim_op, forge_lane

    from board.ids import utcnow

    alice, bob, ids = board_of(tmp_path)
    forge_lane(tmp_path / "srv" / "commons.git", bob, claim_op("bob", ids[0], utcnow() + timedelta(days=1)))
    alice.refresh()
    for _ in range(2):
        out, err, modules = wl(alice.home, "browse", importtime=True)
        assert "wl: warning: skipped claim lane" in err and "dulwich" in modules
        assert ids[0] in out
