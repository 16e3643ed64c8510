"""The browse index (board/index.py): kept up bucket by bucket, same answers as a full read, never trusted blindly.

Real parts: a bare commons on disk, rigs that post, claim and fetch through board.service, and a participant
who writes crafted trees with git's own plumbing (tests/hostile_git.py). Which buckets a query re-read is
observed through `TreeView.reread` (the index records it), not through timing.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_git import Mallory
from remotes import Rig, join_rig, make_commons
from test_hostile_entries import craft_everything, item_json

from board.cli.main import cli
from board.index import Query
from board.records import Item
from board.store import MAIN, Store
from board.view import TreeView

HOSTILE = "x'); DROP TABLE items; --"  # a board string is a parameter, never SQL


def post(rig: Rig, title: str, **args: object) -> str:
    return rig.post(title, **args)


def varied_board(tmp_path: Path) -> tuple[Path, Rig, Rig, list[str]]:
    commons = make_commons(tmp_path / "srv")
    alice, bob = join_rig(tmp_path, str(commons), "alice"), join_rig(tmp_path, str(commons), "bob")
    ids = []
    types, projects = itertools.cycle(["feature", "bug", "docs"]), itertools.cycle(["", "web", HOSTILE])
    tag_sets = itertools.cycle([[], ["gpu"], ["gpu", "fast"], [HOSTILE], ["fast"]])
    for k in range(18):
        rig = alice if k % 3 else bob
        ids.append(post(rig, f"item {k}", type=next(types), project=next(projects), priority=k % 5,
                        tags=next(tag_sets)))
    bob.claim(ids[1])
    alice.claim(ids[3])
    bob.claim(ids[4])
    bob.done(ids[4], "done it")
    alice.op("delete", ids[5])
    alice.refresh()
    return commons, alice, bob, ids


def old_browse(items: list[Item], q: Query) -> tuple[list[str], int]:
    """What browse computed before the index: filter the full list, sort, cut."""
    pool = [i for i in items if (q.type is None or i.type == q.type)
            and (q.involves is None or q.involves in (i.posted_by, i.claimed_by))
            and (q.project is None or i.project == q.project) and (q.priority is None or i.priority == q.priority)
            and (q.posted_by is None or i.posted_by == q.posted_by)
            and (q.claimed_by is None or i.claimed_by == q.claimed_by) and set(q.tags) <= set(i.tags)]
    if q.status is not None:
        pool = [i for i in pool if i.status == q.status]
    pool.sort(key=lambda i: (i.priority, i.created_at, i.id))
    return [i.id for i in pool[: q.limit]], len(pool)


QUERIES = [
    Query(), Query(status=None, limit=None), Query(status="claimed"), Query(status="withdrawn"),
    Query(status=None, type="bug"), Query(project="web", limit=2), Query(status=None, project=HOSTILE),
    Query(status=None, tags=("gpu",)), Query(status=None, tags=("gpu", "fast")), Query(tags=(HOSTILE,)),
    Query(priority=0), Query(status=None, posted_by="bob"), Query(status=None, claimed_by="bob"),
    Query(status=None, involves="bob", limit=3), Query(status="in_review", involves="alice"),
    Query(status="open", type="docs", tags=("fast",), priority=2), Query(status=None, posted_by=HOSTILE),
]


def _view(commons: Path, cache: Path) -> tuple[Store, TreeView]:
    store = Store(commons)
    head = store.ref(MAIN)
    assert head is not None
    return store, TreeView(store, store.tree_id(head), cache)


def test_filters_answer_as_the_full_read_did_hostile_entries_included(tmp_path: Path) -> None:
    commons, alice, _, ids = varied_board(tmp_path)
    mallory = Mallory(commons, tmp_path / "mallory.git")
    used = {i[2:4] for i in ids}
    free = [f"{x:02x}" for x in range(256) if f"{x:02x}" not in used][:8]
    expected = craft_everything(mallory, free, ids[4])
    twin = ids[0]
    mallory.push({f"wanted/{twin}.json": mallory.file(item_json(twin, title="flat twin")),
                  "wanted/w-abcdef0123.json": mallory.file(item_json("w-abcdef0123", title="flat one"))})
    cache = tmp_path / "cache" / "items.json"
    store, full = _view(commons, tmp_path / "nocache" / "items.json")
    try:
        everything = full.items()  # the reader's full read, with its warnings
    finally:
        store.close()
    assert "w-abcdef0123" in {i.id for i in everything} and len(everything) == 19
    for round_ in ("cold", "warm"):
        for q in QUERIES:
            store, view = _view(commons, cache)
            try:
                res = view.query(q)
                assert ([i.id for i in res.items], res.total) == old_browse(everything, q), (round_, q)
                assert [i.title for i in res.items if i.id == twin] in ([], ["item 0"])  # the bucket's copy wins
                wanted_skips = {p: r for p, r in view.skipped.items() if p.startswith("wanted/")}
                assert wanted_skips == {p: r for p, r in full.skipped.items() if p.startswith("wanted/")}
                if round_ == "warm":
                    assert view.reread == []
            finally:
                store.close()
    for path, reason in expected.items():
        if path.startswith("wanted/"):
            assert reason in full.skipped[path]
    assert oct((tmp_path / "cache" / "index.sqlite").stat().st_mode & 0o777) == "0o600"


def test_only_the_buckets_a_fetch_changed_are_read_again(tmp_path: Path) -> None:
    commons, alice, bob, ids = varied_board(tmp_path)
    with alice.board() as board:
        view = board.view()
        first = view.query(Query(status=None, limit=None))
        assert sorted(view.reread) == sorted({f"wanted/{i[2:4]}" for i in ids})  # cold: every bucket
        assert first.total == len(ids)
    with alice.board() as board:
        view = board.view()
        view.query(Query())
        assert view.reread == []  # nothing changed: nothing re-read

    touched = [ids[0], ids[7], ids[9]]
    for item in touched:  # another rig claims three items: on their lanes, so main's buckets stay as they were
        bob.claim(item)
    alice.refresh()
    with alice.board() as board:
        view = board.view()
        res = view.query(Query(status="claimed", claimed_by="bob", limit=None))
        assert view.reread == [] and set(touched) <= {i.id for i in res.items}
    for item in touched:  # and completes them: main changes those three items; alice fetches them
        bob.done(item, "done")
    alice.refresh()
    with alice.board() as board:
        view = board.view()
        res = view.query(Query(status="in_review", claimed_by="bob", limit=None))
        assert sorted(view.reread) == sorted({f"wanted/{i[2:4]}" for i in touched})
        assert set(touched) <= {i.id for i in res.items}
        full = [i.id for i in sorted(view.items(), key=lambda i: (i.priority, i.created_at, i.id))
                if i.status == "in_review" and i.claimed_by == "bob"]
        assert [i.id for i in res.items] == full

    fresh = post(alice, "new one", push=False)  # a local, unpushed post is in the view too
    with alice.board() as board:
        view = board.view()
        assert fresh in {i.id for i in view.query(Query(limit=None)).items}
        assert view.reread == [f"wanted/{fresh[2:4]}"]


@pytest.mark.parametrize("damage", ["garbage", "foreign", "bad row", "truncated"])
def test_a_damaged_or_foreign_index_is_rebuilt_not_trusted(tmp_path: Path, damage: str) -> None:
    commons, alice, _, ids = varied_board(tmp_path)
    index = alice.home / "cache" / "index.sqlite"

    def browse() -> list[str]:
        res = CliRunner().invoke(cli, ["--home", str(alice.home), "--json", "browse", "--status", "all",
                                       "--limit", "100"])
        assert res.exit_code == 0 and "Traceback" not in res.output, res.output
        return [i["id"] for i in json.loads(res.stdout)["items"]]

    good = browse()
    assert sorted(good) == sorted(ids) and index.exists()
    if damage == "garbage":
        index.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:1000])
    else:
        db = sqlite3.connect(index)
        if damage == "foreign":
            db.execute("UPDATE meta SET value = 'ffffffffffffffff' WHERE key = 'board'")
        else:  # a row that is no item (an edited cache): refused, the index rebuilt from the tree
            db.execute("UPDATE items SET body = ?", (b'{"id": "../../etc", "title": 5}',))
        db.commit()
        db.close()
    assert browse() == good
    db = sqlite3.connect(index)
    try:
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == len(ids)
        assert db.execute("SELECT value FROM meta WHERE key = 'board'").fetchone()[0] != "ffffffffffffffff"
    finally:
        db.close()


def test_overridden_records_are_judged_on_the_override(tmp_path: Path) -> None:
    """Claim lanes fold over main's items (the view's `overlay`): browse from the index must list and count
    those items as their override says, exactly as a full read with the override applied does."""
    from dataclasses import replace

    commons, alice, _, ids = varied_board(tmp_path)
    with alice.board() as board:
        view = board.view()
        items = {i.id: i for i in view.items()}
        opened = [i for i in ids if items[i].status == "open"]
        overlay = {i: replace(items[i], status="claimed", claimed_by="carol", claim_expires_at="2099-01-01T00:00:00Z")
                   for i in opened[:4]}
        overlay[ids[1]] = replace(items[ids[1]], status="open", claimed_by=None)  # and one claim given up
        view.overlay = {**view.overlay, **overlay}  # the board's real lanes (its claims), and these on top
        folded = [overlay.get(i.id, i) for i in items.values()]
        for q in [*QUERIES, Query(status="claimed", claimed_by="carol"), Query(limit=3),
                  Query(status="open", limit=1), Query(status="claimed", limit=2)]:
            res = view.query(q)
            assert ([i.id for i in res.items], res.total) == old_browse(folded, q), q
            pool = [i for i in folded if Query(**{**q.__dict__, "status": None}).matches(i)]
            want = {s: sum(1 for i in pool if i.status == s) for s in {i.status for i in pool}}
            if q.status is not None:
                assert res.others == {s: n for s, n in want.items() if s != q.status}, q
