"""Issue 9's attacks, made the way a participant with push access would: plain `git clone`, edit, `git commit`,
`git push` to the commons over a path, `git daemon` and HTTP. Every rig validates what it fetches, so each
bad commit is excluded and named, readers keep the last valid state, and the next mutation repairs the
commons; a force-push is reported and the dropped operations come back under their authors' signatures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remotes import (
    Rig,
    git,
    join_rig,
    make_commons,
    remote_head,
    remote_item,
    remote_ops,
    running_git_daemon,
    running_http,
)

from board.cli.main import cli
from board.store import Store
from board.view import TreeView


def wl(rig: Rig, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(rig.home), *args])
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def remote_file(commons: Path, path: str) -> bytes | None:
    store = Store(commons)
    try:
        return TreeView(store, store.tree_id(remote_head(commons))).read(path)
    finally:
        store.close()


@pytest.fixture(params=["path", "daemon", "http"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A commons and the URL rigs and raw git reach it by."""
    commons = make_commons(tmp_path / "srv")
    if request.param == "path":
        yield commons, str(commons)
    elif request.param == "daemon":
        with running_git_daemon(tmp_path / "srv") as daemon:
            yield commons, daemon.url("commons.git")
    else:
        with running_http(tmp_path / "srv") as server:
            yield commons, server.url("commons.git")


def hand_edit(
    tmp_path: Path, url: str, edit: Callable[[Path], object], message: str = "tidy up", add: bool = True
) -> str:
    """mallory's clone, edit, commit and push; returns the pushed commit."""
    work = tmp_path / f"mallory-{len(list(tmp_path.glob('mallory-*')))}"
    git("clone", "-q", url, str(work))
    edit(work)
    if add:
        git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def board_of(tmp_path: Path, url: str) -> tuple[Rig, Rig, Rig]:
    return tuple(join_rig(tmp_path, url, h) for h in ("alice", "bob", "carol"))  # type: ignore[return-value]


def assert_reported_and_repaired(rig: Rig, commons: Path, bad: str, path: str) -> None:
    code, out, err = wl(rig, "doctor")
    assert code == 1 and bad[:12] in out and "mallory" in out and path in out
    code, out, err = wl(rig, "sync")
    assert code == 1 and bad[:12] in out and path in out and err.startswith("wl: error: ") and err.count("\n") == 1
    assert remote_ops(commons)[-1][0].startswith(f"wl: repair by {rig.handle}")
    assert wl(rig, "doctor")[0] == 0


def test_a_rig_address_swap_is_excluded_and_repaired(served: tuple[Path, str], tmp_path: Path) -> None:
    commons, url = served
    alice, bob, _ = board_of(tmp_path, url)
    genuine = remote_file(commons, "rigs/bob.json")
    assert genuine is not None

    def swap(work: Path) -> None:
        rig = json.loads((work / "rigs/bob.json").read_text())
        rig["address"] = "0x" + "66" * 20
        (work / "rigs/bob.json").write_text(json.dumps(rig, indent=2, sort_keys=True) + "\n")

    bad = hand_edit(tmp_path, url, swap)
    shown = json.loads(wl(alice, "--json", "rig", "show", "bob")[1])  # the swap never reaches a reader
    assert shown["rig"]["address"] == json.loads(genuine)["address"]
    assert_reported_and_repaired(alice, commons, bad, "rigs/bob.json")
    assert remote_file(commons, "rigs/bob.json") == genuine
    item = bob.post("bob still signs as bob")  # bob's own key is still the registered one
    assert remote_item(commons, item).posted_by == "bob"


def _attested(alice: Rig, bob: Rig, carol: Rig) -> tuple[str, str]:
    items = []
    for title in ("first", "second"):
        iid = alice.post(title)
        bob.claim(iid)
        bob.done(iid, "e")
        items.append(iid)
    carol.op("attest", items[0], record={"verdict": "VERIFIED", "signature": "0x" + "11" * 65})
    return items[0], items[1]


def test_copied_and_deleted_attestations_are_excluded(served: tuple[Path, str], tmp_path: Path) -> None:
    commons, url = served
    alice, bob, carol = board_of(tmp_path, url)
    first, second = _attested(alice, bob, carol)
    src = f"attestations/{first[2:4]}/{first}/carol.json"
    dst = f"attestations/{second[2:4]}/{second}/carol.json"

    def copy(work: Path) -> None:
        (work / dst).parent.mkdir(parents=True, exist_ok=True)
        (work / dst).write_bytes((work / src).read_bytes())

    bad = hand_edit(tmp_path, url, copy)
    assert_reported_and_repaired(alice, commons, bad, dst)
    assert remote_file(commons, dst) is None
    bad = hand_edit(tmp_path, url, lambda work: (work / src).unlink())
    assert_reported_and_repaired(bob, commons, bad, src)
    assert remote_file(commons, src) is not None


def test_a_changed_board_id_is_excluded(served: tuple[Path, str], tmp_path: Path) -> None:
    commons, url = served
    alice, _, _ = board_of(tmp_path, url)

    def rename(work: Path) -> None:
        meta = json.loads((work / "board.json").read_text())
        meta["board_id"] = "0123456789abcdef"
        (work / "board.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    original = remote_file(commons, "board.json")
    bad = hand_edit(tmp_path, url, rename)
    assert_reported_and_repaired(alice, commons, bad, "board.json")
    assert remote_file(commons, "board.json") == original


def test_a_gitlink_item_and_bad_timestamps_stop_nobody(served: tuple[Path, str], tmp_path: Path) -> None:
    commons, url = served
    alice, bob, _ = board_of(tmp_path, url)
    honest = alice.post("an honest open job")
    link = "wanted/ab/w-ab00000000.json"
    bad = hand_edit(tmp_path, url, lambda work: git(
        "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},{link}", cwd=work), add=False)
    liar = "w-cd11111111"

    def bad_time(work: Path) -> None:
        item = json.loads((work / f"wanted/{honest[2:4]}/{honest}.json").read_text())
        item.update(id=liar, status="claimed", claimed_by="bob", claim_expires_at="2026-99-99T99:99:99Z")
        path = work / f"wanted/cd/{liar}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(item, indent=2, sort_keys=True) + "\n")

    bad_time_commit = hand_edit(tmp_path, url, bad_time)
    for args in (("browse",), ("show", honest), ("doctor",)):
        code, out, err = wl(bob, *args)
        assert "internal error" not in err and "Traceback" not in out
    assert bad[:12] in wl(bob, "doctor")[1]
    assert wl(bob, "claim", honest)[0] == 0  # repairs, then claims
    assert remote_item(commons, honest).claimed_by == "bob"
    assert remote_file(commons, link) is None and remote_file(commons, f"wanted/cd/{liar}.json") is None
    assert wl(bob, "unclaim", honest)[0] == 0
    assert bad_time_commit  # excluded with the first one


def test_valid_work_pushed_after_an_invalid_commit_survives(tmp_path: Path) -> None:
    """An operation signed on top of the bad commit (a rig that did not validate) is kept; the bad one is not."""
    from board.home import Home
    from board.ids import new_item_id, utcnow
    from board.ledger import Ledger
    from board.ops import Op
    from board.publish import Chain
    from board.store import MAIN

    commons = make_commons(tmp_path)
    url = str(commons)
    alice, bob, _ = board_of(tmp_path, url)
    item = alice.post("contested")
    bad = hand_edit(tmp_path, url, lambda work: (work / "rigs/alice.json").unlink())
    store = Store(commons)
    try:  # bob, running a wl that does not validate, claims on top of mallory's commit
        head = store.ref(MAIN)
        assert head is not None
        state, _ = Ledger(store, tmp_path / "scratch.json").advance(head, save=False)
        from board.keys import load_private_key

        chain = Chain.on(store, state, [load_private_key(bob.home)], head, store.tree_id(head))
        chain.add(Op(op="claim", by="bob", at="", id=item, args={"lease_seconds": 1800}))
        assert chain.head is not None and store.set_ref(MAIN, chain.head, head)
    finally:
        store.close()
    code, out, _ = wl(alice, "sync")
    assert code == 1 and bad[:12] in out and "rigs/alice.json" in out
    assert remote_item(commons, item).claimed_by == "bob"
    assert remote_file(commons, "rigs/alice.json") is not None
    assert alice.item(item).claimed_by == "bob"
    other = new_item_id("x", utcnow())
    assert other and Home(alice.home).exists()


def test_a_force_push_dropping_a_claim_and_a_done_is_healed(tmp_path: Path) -> None:
    with running_git_daemon(tmp_path / "srv") as daemon:
        commons = make_commons(tmp_path / "srv")
        url = daemon.url("commons.git")
        alice, bob, carol = board_of(tmp_path, url)
        item = alice.post("to be dropped")
        before = remote_head(commons).decode()
        bob.claim(item)
        bob.done(item, "bob's evidence")
        carol.refresh()  # carol has validated bob's two commits
        work = tmp_path / "mallory"
        git("clone", "-q", url, str(work))
        git("push", "-q", "--force", "origin", f"{before}:main", cwd=work)
        # with the fold gone, main's record is the one bob's claim lane builds on: his lane claim holds again
        # (his done went straight into main with the fold: main was quiet, so it never needed the lane)
        assert (remote_item(commons, item).status, remote_item(commons, item).claimed_by) == ("claimed", "bob")

        assert carol.pending() == []  # bob's commits are not carol's work
        code, out, _ = wl(carol, "sync")
        assert code == 0, out
        # bob's claim lived on its lane; his fold carried his done (and that claim) to main; only the fold vanished
        assert "history was rewritten: 1 commit(s) vanished" in out
        assert "republished fold" in out
        healed = remote_item(commons, item)
        assert (healed.status, healed.claimed_by) == ("in_review", "bob")
        inner = [op for _, op in remote_ops(commons)[-1:]]
        assert [(o.op, o.by) for o in inner if o] == [("republish", "carol")]
        assert [json.loads(o.args["op"])["by"] for o in inner if o] == ["bob"]
        carried = json.loads(inner[0].args["op"])["args"]["results"] if inner[0] else []
        assert [json.loads(r["op"])["args"]["lane"]["sig"][:2] for r in carried] == ["0x"]
        report = bob.sync()  # no false conflict for bob
        assert report.conflicted == [] and report.replayed == []
        assert bob.item(item).status == "in_review"
        assert wl(alice, "accept", item, "--quality", "4")[0] == 0


def test_a_merge_commit_is_excluded(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    url = str(commons)
    alice, _, _ = board_of(tmp_path, url)
    work = tmp_path / "mallory"
    git("clone", "-q", url, str(work))
    merge = git("commit-tree", "HEAD^{tree}", "-p", "HEAD", "-p", "HEAD~1", "-m", "merge", cwd=work).stdout.strip()
    git("push", "-q", "origin", f"{merge}:main", cwd=work)
    code, out, _ = wl(alice, "sync")
    assert code == 1 and merge[:12] in out and "merge commit" in out


def _signed(store: Store, rig: Rig, op: Any) -> bytes:
    """A commit signed by `rig` exactly as wl signs, but with whatever time `op` carries."""
    from board import commits, ops
    from board.keys import load_private_key
    from board.store import MAIN, NewObjects
    from board.treecheck import strict_time

    head = store.ref(MAIN)
    assert head is not None
    tree = store.tree_id(head)
    board_id = TreeView(store, tree).meta()["board_id"]
    applied = ops.apply(TreeView(store, tree), op, strict_time(op.at))
    new = NewObjects()
    tree = store.build_tree(tree, applied.changes, new)
    sig = commits.sign(load_private_key(rig.home), board_id, head, tree, op.encode())
    commit = store.commit_tree(head, tree, commits.message(op.encode(), op, sig), rig.handle, new)
    assert store.set_ref(MAIN, commit, head)
    return commit


@pytest.mark.parametrize(("shift", "reason"), [(timedelta(days=1), "lies in the future"),
                                               (timedelta(days=-1), "earlier than the previous")])
def test_operations_dated_in_the_future_or_the_past_are_excluded(tmp_path: Path, shift: timedelta,
                                                                 reason: str) -> None:
    from board.ids import fmt_time, utcnow
    from board.ops import Op

    commons = make_commons(tmp_path)
    alice, bob, _ = board_of(tmp_path, str(commons))
    item = alice.post("leased")
    store = Store(commons)
    try:  # bob dates his claim a day off, to take or hold the lease early or late
        bad = _signed(store, bob, Op(op="claim", by="bob", at=fmt_time(utcnow() + shift), id=item,
                                     args={"lease_seconds": 1800}))
    finally:
        store.close()
    code, out, _ = wl(alice, "sync")
    assert code == 1 and bad.decode()[:12] in out and reason in out
    assert remote_item(commons, item).status == "open"
    bob.claim(item)  # bob's honest claim goes through
    assert remote_item(commons, item).claimed_by == "bob"


def test_a_history_replaced_from_its_root_is_refused(tmp_path: Path) -> None:
    """What validation starts from is trusted once: a force-push of another board's history is not followed."""
    commons = make_commons(tmp_path)
    alice, _, _ = board_of(tmp_path, str(commons))
    item = alice.post("ours")
    other = make_commons(tmp_path, "other.git")
    git("push", "-q", "--force", str(commons), "main:main", cwd=other)
    code, out, err = wl(alice, "sync")
    assert code == 1 and "replaced down to its root" in err and err.count("\n") == 1
    assert alice.item(item).title == "ours"  # reads keep the last validated state


def test_a_tree_of_the_wrong_object_types_is_excluded_not_a_crash(tmp_path: Path) -> None:
    """git does not fsck pushed trees by default: a folder entry may name a blob, a file entry a tree."""
    from dulwich.objects import Blob, Commit
    from dulwich.objects import Tree as GitTree

    from board.store import MAIN, TREE_MODE

    commons = make_commons(tmp_path)
    alice, _, _ = board_of(tmp_path, str(commons))
    item = alice.post("honest")
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        blob = Blob.from_string(b"not a tree")
        root = GitTree()
        for e in store.tree(store.tree_id(head)).iteritems():
            root.add(e.path, e.mode, e.sha)
        root.add(b"wanted", TREE_MODE, blob.id)
        commit = Commit()
        commit.tree, commit.parents = root.id, [head]
        commit.author = commit.committer = b"mallory <m@example.invalid>"
        commit.author_time = commit.commit_time = 0
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"types\n"
        for obj in (blob, root, commit):
            store.objects.add_object(obj)
        assert store.set_ref(MAIN, commit.id, head)
    finally:
        store.close()
    code, out, err = wl(alice, "sync")
    assert code == 1 and commit.id.decode()[:12] in out and "changed wanted" in out
    assert remote_item(commons, item).title == "honest"  # repaired


def test_wl_log_marks_a_signed_commit_the_ledger_refused_before_and_after_the_repair(tmp_path: Path) -> None:
    """bob signs a claim computed on a stale state and pushes it over alice's withdrawal: well-formed,
    rule-breaking."""
    from board.keys import load_private_key
    from board.ledger import Ledger
    from board.ops import Op
    from board.publish import Chain
    from board.store import MAIN

    commons = make_commons(tmp_path)
    alice, bob, carol = board_of(tmp_path, str(commons))
    item = alice.post("contested")
    store = Store(commons)
    try:
        stale = store.ref(MAIN)
        assert stale is not None
        assert wl(alice, "delete", item)[0] == 0
        head = store.ref(MAIN)
        assert head is not None and head != stale
        state, _ = Ledger(store, tmp_path / "scratch.json").advance(stale, save=False)
        chain = Chain.on(store, state, [load_private_key(bob.home)], head, store.tree_id(stale))
        chain.add(Op(op="claim", by="bob", at="", id=item, args={"lease_seconds": 1800}))
        assert chain.head is not None and store.set_ref(MAIN, chain.head, head)
        forged = chain.head.decode()
    finally:
        store.close()
    assert wl(carol, "sync")[0] == 1  # excluded and reported
    code, out, _ = wl(carol, "--json", "log", item)
    records = json.loads(out)
    assert code == 0 and [(r["op"], r["by"]) for r in records] == [("post", "alice"), ("delete", "alice"), ("claim", "bob")]
    assert [r["commit"] for r in records if r["refused"]] == [forged]
    reason = records[2]["refused"]
    code, out, _ = wl(carol, "log", item)
    assert out.strip().splitlines()[-1].startswith(forged[:7]) and f"✗ refused by the ledger: {reason}" in out
    assert wl(carol, "post", "--title", "carol's next change repairs the commons")[0] == 0
    code, out, _ = wl(carol, "--json", "log", item)
    after = json.loads(out)
    assert [(r["op"], r["by"], r["commit"] == forged) for r in after if r["refused"]] == [("claim", "bob", True)]
    assert after[2]["refused"].startswith("excluded by repair ") and after[2]["refused"].endswith("(carol)")
    assert remote_item(commons, item).status == "withdrawn"
