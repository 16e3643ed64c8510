"""Fetch ingestion and bulk reads (issue 15): a fetched pack is checked and indexed in one pass, and a hostile
one is refused; many records are read in one pass over a pack; a join leaves the browse index built.

Real parts only: packs written by git itself (`git repack`) and by dulwich, served by `git daemon` or by a
hostile server speaking git's protocol on 127.0.0.1 (tests/hostile_packs.py), joins through board.service and
the real `wl` executable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dulwich.objects import Commit
from hostile_packs import HostileGitServer, delta, entries_pack, honest_pack, object_id, raw_pack
from remotes import GIT, WL, make_commons, remote_head, running_git_daemon

from board import layout, packs, parsecache
from board.errors import RemoteError
from board.home import Home
from board.ids import fmt_time, utcnow
from board.index import Query, scan_view
from board.records import Item, dumps
from board.service import join
from board.store import MAIN, NewObjects, Store
from board.treecheck import check_tree
from board.view import TreeView


def _items(store: Store, n: int, misplaced: int = 0) -> bytes:
    """A wl-board/1 commons of n open items written straight into git (as the scale benchmark does)."""
    now = fmt_time(utcnow())
    meta = {"format": "wl-board/1", "name": "t", "board_id": os.urandom(8).hex(), "created_at": now}
    head = store.make_commit(None, {layout.BOARD: dumps(meta)}, "wl: create board\n", "wl", NewObjects())
    changes: dict[str, bytes | None] = {}
    for i in range(n):
        iid = f"w-{(i + 1) * 2654435761 % (1 << 40):010x}"
        item = Item(id=iid, title=f"item {i}", posted_by="poster", created_at=now, updated_at=now, priority=i % 5)
        path = layout.item_path(iid)
        if i < misplaced:  # in the wrong bucket: readers skip it with a warning
            path = f"wanted/{'00' if layout.bucket(iid) != '00' else '01'}/{iid}.json"
        changes[path] = item.encode()
    head = store.make_commit(head, changes, f"wl: {n} items\n", "poster", NewObjects())
    store.force_ref(MAIN, head)
    return head


def _git_repacked(path: Path, n: int, misplaced: int = 0) -> None:
    if GIT is None:
        pytest.skip("git is not installed")
    store = Store.init_bare(path)
    try:
        _items(store, n, misplaced)
    finally:
        store.close()
    subprocess.run([GIT, "-C", str(path), "repack", "-adq"], check=True)
    subprocess.run([GIT, "-C", str(path), "prune-packed"], check=True)
    (path / "git-daemon-export-ok").touch()


# --- one pass over a pack --------------------------------------------------------------------------------
def test_take_in_indexes_a_pack_exactly_as_git_does(tmp_path: Path) -> None:
    served = tmp_path / "served.git"
    _git_repacked(served, 600)
    (pack,) = (served / "objects" / "pack").glob("*.pack")
    incoming, pack_dir = tmp_path / "incoming", tmp_path / "pack"
    pack_dir.mkdir()
    shutil.copy(pack, incoming)
    kept = packs.take_in(incoming, pack_dir)
    (idx,) = pack_dir.glob("*.idx")
    assert idx.read_bytes() == pack.with_suffix(".idx").read_bytes()  # offsets, CRCs and shas: git's own
    assert not incoming.exists() and idx.with_suffix(".pack").read_bytes() == pack.read_bytes()
    store = Store(served)
    try:
        blobs = [(s, v) for s, v in kept.items() if v[0] == 3]
        assert len(blobs) == 601  # every record and board.json, deltas resolved
        for sha, (kind, data) in blobs[:: 50]:
            assert store.objects.get_raw(sha) == (kind, data)
    finally:
        store.close()


def test_read_pack_reads_many_records_in_one_pass(tmp_path: Path) -> None:
    served = tmp_path / "served.git"
    _git_repacked(served, 1200)
    store = Store(served)
    try:
        head = store.ref(MAIN)
        assert head is not None
        wanted = store.lookup(store.tree_id(head), "wanted")
        assert wanted is not None
        shas = [e.sha for b in store.tree(wanted[1]).iteritems() for e in store.tree(b.sha).iteritems()]
        assert store.preload(shas) == 1200
        fresh = Store(served)  # one lookup each, nothing held
        try:
            assert all(store.raw(s) == fresh.raw(s) for s in shas)
        finally:
            fresh.close()
    finally:
        store.close()


# --- hostile packs ---------------------------------------------------------------------------------------
def _board_pack(tmp_path: Path) -> tuple[bytes, bytes]:
    commons = make_commons(tmp_path)
    head = remote_head(commons)
    store = Store(commons)
    try:
        return head, honest_pack(store, head)
    finally:
        store.close()


def _bad_tree_pack() -> tuple[bytes, bytes]:
    """A commit whose tree does not parse (a mode that is no number), in a pack whose checksum is right."""
    tree = (2, b"10x644 board.json\0" + b"\x11" * 20)
    commit = Commit()
    commit.tree = object_id(tree)
    commit.author = commit.committer = b"m <m@example.invalid>"
    commit.author_time = commit.commit_time = 0
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"wl: create board\n"
    return object_id(commit), raw_pack([(1, commit.as_raw_string()), tree])


def _variant(kind: str, tmp_path: Path) -> tuple[bytes, bytes]:
    if kind == "bad object":
        return _bad_tree_pack()
    head, pack = _board_pack(tmp_path)
    if kind == "truncated":
        return head, pack[: len(pack) * 2 // 3]
    if kind == "bad checksum":
        return head, pack[:-1] + bytes([pack[-1] ^ 1])
    if kind == "trailing bytes":
        body = pack[:-20] + b"\0" * 9
        import hashlib

        return head, body + hashlib.sha1(body).digest()
    assert kind == "corrupt stream"
    middle = len(pack) // 2
    return head, pack[:middle] + bytes([pack[middle] ^ 0xFF]) + pack[middle + 1 :]


@pytest.mark.parametrize("kind", ["truncated", "bad object", "bad checksum", "trailing bytes", "corrupt stream"])
def test_a_hostile_pack_is_refused_and_leaves_no_home(kind: str, tmp_path: Path) -> None:
    head, pack = _variant(kind, tmp_path)
    home = Home(tmp_path / "home")
    with HostileGitServer(head, pack) as server:
        with pytest.raises(RemoteError) as refused:
            join(home, server.url, "alice")
        assert server.served >= 1
    assert "sent a pack that is not valid" in str(refused.value)
    assert not home.exists()  # no clone left behind: a later join starts afresh
    leftovers = list((tmp_path / "home").rglob("tmp_*")) if (tmp_path / "home").exists() else []
    assert leftovers == []


def test_wl_join_of_a_hostile_pack_is_one_error_line(tmp_path: Path) -> None:
    head, pack = _bad_tree_pack()
    env = {**os.environ, "WL_HOME": str(tmp_path / "home")}
    with HostileGitServer(head, pack) as server:
        p = subprocess.run([WL, "join", server.url, "--handle", "alice"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wl: error: ") and "not valid" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not Home(tmp_path / "home").exists()


def test_an_honest_pack_from_the_same_server_joins(tmp_path: Path) -> None:
    """The hostile server's plumbing is sound: given the honest pack, the join succeeds."""
    head, pack = _board_pack(tmp_path)
    with HostileGitServer(head, pack) as server:
        board, _ = join(Home(tmp_path / "home"), server.url, "alice")  # its register push is refused later
        board.close()


# --- join builds the index -------------------------------------------------------------------------------
def test_join_leaves_the_browse_index_built(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a join over git daemon the first browse re-reads no bucket, and lists what a full read lists,
    misplaced items skipped with the same warnings (the join itself keeps quiet about them)."""
    with running_git_daemon(tmp_path / "served") as daemon:
        _git_repacked(daemon.base / "b.git", 400, misplaced=3)
        join(Home(tmp_path / "first"), daemon.url("b.git"), "bench")[0].close()  # checkpoints wl-board/1
        home = Home(tmp_path / "second")
        caplog.clear()
        board, _ = join(home, daemon.url("b.git"), "bob")
        assert not [r for r in caplog.records if "skipped" in r.getMessage()]
        try:
            view = board.view()
            got = view.query(Query(limit=None))
            assert len([r for r in caplog.records if "belongs in wanted/" in r.getMessage()]) == 3
            assert view.reread == []  # built by the join
            full = scan_view(TreeView(board.store, view.tree), Query(limit=None))
            assert [i.id for i in got.items] == [i.id for i in full.items] and got.total == 397
            assert len(view.skipped) == 3 and all("belongs in wanted/" in r for r in view.skipped.values())
        finally:
            board.close()


def test_remembered_rows_are_exactly_what_the_reader_makes(tmp_path: Path) -> None:
    """A checkpoint check remembers only buckets the index would read as they are; those rows equal the
    reader's own, and a bucket with a misplaced item is left for the reader."""
    served = tmp_path / "b.git"
    _git_repacked(served, 300, misplaced=2)
    store = Store(served)
    try:
        head = store.ref(MAIN)
        assert head is not None
        tree = store.tree_id(head)
        view = TreeView(store, tree)
        buckets, _ = view.buckets("wanted")
        check_tree(store, tree)  # outside a join nothing is held
        assert all(parsecache.recall(f"wanted/{name}", sha) is None for name, sha in buckets.items())
        with parsecache.collecting():
            check_tree(store, tree)
            remembered = {name: parsecache.recall(f"wanted/{name}", sha) for name, sha in buckets.items()}
        left = [name for name, rows in remembered.items() if rows is None]
        assert 1 <= len(left) <= 2
        for name, rows in remembered.items():
            reader = view.bucket_rows("wanted", name, buckets[name])
            if rows is None:
                assert any("skip" in r for r in reader)
            else:
                assert rows == reader
    finally:
        store.close()


def test_a_thin_pack_still_comes_in(tmp_path: Path) -> None:
    """Later fetches over git daemon get thin packs (deltas against what the rig has): they go dulwich's way
    and the rig sees every change."""
    from remotes import join_rig

    with running_git_daemon(tmp_path / "served") as daemon:
        make_commons(daemon.base, "c.git")
        (daemon.base / "c.git" / "git-daemon-export-ok").touch()
        url = daemon.url("c.git")
        alice, bob = join_rig(tmp_path, url, "alice"), join_rig(tmp_path, url, "bob")
        ids = [alice.post(f"a long enough title to delta against, number {i}", description="x" * 400)
               for i in range(6)]
        bob.refresh()
        for iid in ids:
            alice.claim(iid)
        bob.refresh()
        assert all(bob.item(iid).claimed_by == "alice" for iid in ids)


def test_a_tree_that_does_not_parse_is_refused_by_the_pass() -> None:
    _, pack = _bad_tree_pack()
    with pytest.raises(packs.BadPack, match="tree .* does not parse"):
        packs.scan(pack, packs.small_records)


def test_remembering_is_per_thread_and_ends_with_the_block() -> None:
    """Two joins in two threads: one ending inside the other's block neither stops nor leaves it on."""
    import threading

    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with parsecache.collecting():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    key = ("wanted/ab", b"a" * 40)
    parsecache.remember(*key, [])  # this thread is not collecting: nothing is held
    assert parsecache.recall(*key) is None
    with parsecache.collecting():
        leave.set()
        thread.join(10)
        parsecache.remember(*key, [{"item": {}}])
        assert parsecache.recall(*key) == [{"item": {}}]
        parsecache.remember(*key, [])
    assert parsecache.recall(*key) is None  # dropped with the block
    parsecache.remember(*key, [])
    assert parsecache.recall(*key) is None


def test_deltas_on_deltas_resolve_in_any_order_and_a_missing_base_is_a_thin_pack() -> None:
    """An OFS_DELTA whose base is a REF_DELTA still waiting for its base: resolved once that base comes later in
    the pack; left to dulwich (Unsuited, not refused) when that base is outside the pack (a thin pack)."""
    a = b"an item record, long enough to be worth a delta " * 4
    b, c = a + b"and one change", a + b"and one change and another"
    base = (3, None, a)
    ref = (7, bytes.fromhex(object_id((3, a)).decode()), delta(a, b))
    later = entries_pack([ref, (6, 0, delta(b, c)), base])
    got = {sha.hex(): content for _, _, content, sha, _ in packs.objects(later)}
    assert sorted(got.values()) == sorted([a, b, c])
    assert all(object_id((3, v)).decode() == k for k, v in got.items())
    thin = entries_pack([ref, (6, 0, delta(b, c))])
    with pytest.raises(packs.Unsuited, match="thin"):
        list(packs.objects(thin))
    assert len(list(packs.objects(entries_pack([base, (6, 0, delta(a, b))])))) == 2  # a plain OFS_DELTA
