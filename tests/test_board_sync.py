"""Work done while the remote is away, replayed later; conflicts reported with their data kept; bad records.

Remotes go away for real: the git daemon is stopped, the HTTP server refuses or loses pushes, a bare repo is
moved aside, a URL points at a dead port. The command must succeed locally and say so, `wl sync` must later
replay the work, the other rig must see it, and nothing written by a completed command may be lost.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remotes import (
    GitDaemon,
    HttpGit,
    Rig,
    claims_of,
    commit_file_to_remote,
    free_port,
    join_rig,
    make_commons,
    remote_head,
    remote_item,
    remote_ops,
    running_git_daemon,
    running_http,
    set_remote,
)

from board.cli.main import cli
from board.errors import AlreadyClaimed
from board.home import Home
from board.store import Store


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    with running_git_daemon(tmp_path / "served") as daemon:
        yield daemon


@pytest.fixture
def http_git(tmp_path: Path) -> Iterator[HttpGit]:
    with running_http(tmp_path / "served-http") as server:
        yield server


def wl(rig: Rig, *args: str) -> tuple[int, str, str]:
    """`wl` in-process as this rig: (exit code, stdout, stderr); never a traceback."""
    result = CliRunner().invoke(cli, ["--home", str(rig.home), *args])
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def wl_json(rig: Rig, *args: str) -> tuple[int, Any]:
    code, out, err = wl(rig, "--json", *args)
    return code, (json.loads(out) if out.strip() else None)


def pair(tmp_path: Path, url: str) -> tuple[Rig, Rig]:
    return join_rig(tmp_path, url, "alice"), join_rig(tmp_path, url, "bob")


# --- --no-push and unreachable remotes ----------------------------------------------------------------
def test_no_push_stays_local_until_sync(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    item_id = bob.post("offline target")
    code, out, err = wl(alice, "claim", item_id, "--no-push")
    assert (code, err) == (1, f'wl: error: no wanted item matching "{item_id}"\n')  # offline: not seen yet
    alice.refresh()
    code, out, err = wl(alice, "claim", item_id, "--no-push")
    assert code == 0, err
    assert f"Claimed {item_id}" in out
    assert "committed locally, not pushed: --no-push" in out and "wl sync" in out
    assert remote_item(commons, item_id).status == "open"
    assert [op.op for op in alice.pending()] == ["claim"]

    code, doc = wl_json(alice, "sync")
    assert code == 0 and doc["ok"] and doc["pushed"]
    assert [o["op"] for o in doc["replayed"]] == ["claim"] and doc["conflicted"] == []
    assert alice.pending() == []
    bob.refresh()
    assert bob.item(item_id).claimed_by == "alice"
    code, out, _ = wl(alice, "sync")
    assert code == 0 and "Up to date" in out


def test_offline_session_replays_in_order_and_keeps_odd_text(tmp_path: Path) -> None:
    """post → claim → done while offline, with line-separator characters in the text; sync replays all three."""
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    title = "odd text\u2028line\x85next\u2029para é"
    evidence = "proof:\u2028 see https://example.invalid\n" + "x" * 5000
    item_id = alice.post(title, push=False)
    alice.claim(item_id, push=False)
    alice.done(item_id, evidence, push=False)
    assert [op.op for op in alice.pending()] == ["post", "claim", "done"]
    report = alice.sync()
    assert [o.op for o in report.replayed] == ["post", "claim", "done"] and not report.conflicted
    ops_on_remote = [
        (op.op, op.id, op.by) for _, op in remote_ops(commons) if op is not None and op.id == item_id
    ]
    assert ops_on_remote == [
        ("post", item_id, "alice"),
        ("claim", item_id, "alice"),
        ("done", item_id, "alice"),
    ]
    bob.refresh()
    item = bob.item(item_id)
    assert (item.title, item.status, item.evidence_url) == (title, "in_review", evidence)


def test_git_daemon_stopped_then_back(tmp_path: Path, git_daemon: GitDaemon) -> None:
    commons = make_commons(git_daemon.base)
    alice, bob = pair(tmp_path, git_daemon.url(commons.name))
    item_id = bob.post("claimed while the daemon is down")
    alice.refresh()

    git_daemon.stop()
    code, out, err = wl(alice, "claim", item_id)
    assert code == 0, err
    assert "committed locally, not pushed: remote unreachable" in out
    code, doc = wl_json(alice, "post", "--title", "posted while down")
    assert code == 0 and doc["pushed"] is False and doc["local_reason"].startswith("remote unreachable")
    posted = doc["id"]
    code, out, err = wl(alice, "sync")
    assert code == 1 and err.startswith("wl: error: remote git://127.0.0.1:") and err.count("\n") == 1
    assert [op.op for op in alice.pending()] == ["claim", "post"]  # a failed sync keeps everything

    git_daemon.start()
    code, doc = wl_json(alice, "sync")
    assert code == 0 and [o["op"] for o in doc["replayed"]] == ["claim", "post"]
    bob.refresh()
    assert bob.item(item_id).claimed_by == "alice"
    assert bob.item(posted).title == "posted while down"


def test_dead_port(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    item_id = bob.post("x")
    alice.refresh()
    set_remote(alice, f"git://127.0.0.1:{free_port()}/commons.git")
    res = alice.claim(item_id)
    assert (
        not res.pushed and res.local_reason is not None and res.local_reason.startswith("remote unreachable")
    )
    set_remote(alice, str(commons))
    assert [o.op for o in alice.sync().replayed] == ["claim"]
    assert remote_item(commons, item_id).claimed_by == "alice"


def test_bare_repo_moved_away_and_back(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, commons.as_uri())
    item_id = bob.post("x")
    alice.refresh()
    aside = tmp_path / "aside.git"
    commons.rename(aside)
    code, out, err = wl(alice, "claim", item_id)
    assert code == 0, err
    assert "remote unreachable" in out
    assert alice.item(item_id).claimed_by == "alice"  # the local copy shows the work
    aside.rename(commons)
    code, out, _ = wl(alice, "sync")
    assert code == 0 and f"replayed claim {item_id}" in out
    assert remote_item(commons, item_id).claimed_by == "alice"


def test_http_server_down_then_back(tmp_path: Path, http_git: HttpGit) -> None:
    commons = make_commons(http_git.base)
    alice, bob = pair(tmp_path, http_git.url(commons.name))
    item_id = bob.post("x")
    alice.refresh()
    http_git.stop()
    assert alice.claim(item_id).pushed is False
    http_git.start()  # same port: the rig's URL is unchanged
    assert [o.op for o in alice.sync().replayed] == ["claim"]
    bob.refresh()
    assert bob.item(item_id).claimed_by == "alice"


def test_online_mutation_first_replays_pending_work(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    a = bob.post("first")
    b = bob.post("second")
    alice.refresh()
    alice.claim(a, push=False)
    res = alice.claim(b)  # online: publishes the pending claim first, then this one
    assert res.pushed and res.sync is not None and [o.op for o in res.sync.replayed] == ["claim"]
    assert remote_item(commons, a).claimed_by == "alice" and remote_item(commons, b).claimed_by == "alice"
    assert alice.pending() == []


# --- replay conflicts: reported, data kept ----------------------------------------------------------------
def _kept_files(rig: Rig) -> list[dict[str, Any]]:
    kept = Home(rig.home).kept_dir
    return [json.loads(p.read_text()) for p in sorted(kept.glob("*.json"))] if kept.is_dir() else []


def _kept_refs(rig: Rig) -> dict[bytes, bytes]:
    store = Store(Home(rig.home).repo_path)
    try:
        return {k: v for k, v in store.repo.refs.as_dict().items() if k.startswith(b"refs/wl/kept/")}
    finally:
        store.close()


def test_offline_claim_that_lost_is_reported_and_kept(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    contested = bob.post("contested")
    other = bob.post("uncontested")
    alice.refresh()

    alice.claim(contested, push=False)
    own = alice.post("alice's own, posted offline", push=False)
    alice.claim(other, push=False)
    bob.claim(contested)  # online: bob wins the remote

    code, out, err = wl(alice, "sync")
    assert code == 1
    assert err == "wl: error: 1 operation(s) could not be replayed; their data is kept\n"
    assert f"could not replay claim {contested}" in out and "claimed by bob" in out
    assert "kept in" in out

    # nothing else is lost: the other two operations were published
    assert remote_item(commons, contested).claimed_by == "bob"
    assert remote_item(commons, other).claimed_by == "alice"
    assert remote_item(commons, own).title == "alice's own, posted offline"
    assert alice.pending() == []

    kept = _kept_files(alice)
    assert len(kept) == 1
    record = kept[0]
    assert record["op"]["op"] == "claim" and record["op"]["id"] == contested and record["op"]["by"] == "alice"
    assert "claimed by bob" in record["reason"]
    refs = _kept_refs(alice)
    assert list(refs.values()) == [record["commit"].encode()]
    assert list(refs) == [b"refs/wl/kept/" + record["commit"].encode()]

    # a second sync does not report it again
    code, doc = wl_json(alice, "sync")
    assert code == 0 and doc["conflicted"] == []


def test_offline_done_that_conflicts_keeps_its_evidence(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    poster = join_rig(tmp_path, str(commons), "poster")
    alice, bob = pair(tmp_path, str(commons))
    item_id = poster.post("long job")
    alice.claim(item_id)
    evidence = (
        '{"output": "forty-two", "notes": "three days of work\u2028 and a long log"}' + "\n" * 3 + "z" * 20000
    )
    code, doc = wl_json(alice, "done", item_id, "--evidence", evidence, "--no-push")
    assert code == 0 and doc["pushed"] is False

    # meanwhile the poster releases the claim and bob takes the item
    poster.op("unclaim", item_id)
    bob.claim(item_id)

    code, doc = wl_json(alice, "sync")
    assert code == 1
    assert doc["ok"] is False and len(doc["conflicted"]) == 1
    conflict = doc["conflicted"][0]
    assert conflict["op"]["op"] == "done" and conflict["op"]["args"]["evidence"] == evidence
    assert "alice may not complete" in conflict["reason"]
    kept_path = Path(conflict["kept"])
    assert kept_path.parent == Home(alice.home).kept_dir
    assert json.loads(kept_path.read_text())["op"]["args"]["evidence"] == evidence

    # the kept commit still holds the completion file with the evidence, reachable from its ref
    store = Store(Home(alice.home).repo_path)
    try:
        sha = store.ref(b"refs/wl/kept/" + conflict["commit"].encode())
        assert sha is not None
        comp = store.read(store.tree_id(sha), f"completions/{item_id[2:4]}/{item_id}.json")
        assert comp is not None and json.loads(comp)["evidence"] == evidence
    finally:
        store.close()
    assert remote_item(commons, item_id).claimed_by == "bob"


def test_replay_of_what_the_remote_already_has_is_not_a_conflict(tmp_path: Path, http_git: HttpGit) -> None:
    """A push whose answer is lost (server applied it, then failed the response) is not applied twice."""
    commons = make_commons(http_git.base)
    alice, bob = pair(tmp_path, http_git.url(commons.name))
    item_id = bob.post("x")

    def apply_then_fail(environ: dict[str, Any], start_response: Any, app: Any) -> Iterable[bytes]:
        for _ in app(environ, lambda *a, **k: None):  # the server does the work...
            pass
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"connection lost\n"]  # ...and the answer never arrives

    http_git.on_receive_pack = apply_then_fail
    res = alice.claim(item_id)
    http_git.on_receive_pack = None
    # the remote holds exactly one claim, alice's, whatever alice was told
    assert remote_item(commons, item_id).claimed_by == "alice"
    assert res.pushed is True  # board/remote.py reads the head back after a failed push
    report = alice.sync()
    assert not report.conflicted and not report.replayed
    assert claims_of(commons, item_id) == ["alice"]


@pytest.mark.parametrize("how", ["refuse", "vanish"])
def test_remote_that_goes_away_mid_push_loses_nothing(tmp_path: Path, http_git: HttpGit, how: str) -> None:
    commons = make_commons(http_git.base)
    alice, bob = pair(tmp_path, http_git.url(commons.name))
    item_id = bob.post("x")
    aside = tmp_path / "aside.git"

    def go_away(environ: dict[str, Any], start_response: Any, app: Any) -> Iterable[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if how == "vanish" and commons.exists():
            shutil.move(str(commons), str(aside))  # the repository disappears under the server
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"gone\n"]

    before = remote_head(commons)
    http_git.on_receive_pack = go_away
    code, doc = wl_json(alice, "claim", item_id)
    assert code == 0 and doc["pushed"] is False and doc["local_reason"].startswith("push failed")
    assert http_git.pushes >= 1  # the push really reached the server (the HTTP client may retry it)
    if how == "vanish":
        code, _, err = wl(alice, "sync")
        assert code == 1 and "wl: error: remote http://127.0.0.1:" in err
        shutil.move(str(aside), str(commons))
    http_git.on_receive_pack = None
    assert remote_head(commons) == before
    assert alice.item(item_id).claimed_by == "alice" and [o.op for o in alice.pending()] == ["claim"]
    assert [o.op for o in alice.sync().replayed] == ["claim"]
    assert remote_item(commons, item_id).claimed_by == "alice"


def test_loser_of_a_race_after_offline_work_keeps_the_offline_work(tmp_path: Path) -> None:
    """A pending operation is replayed before an online claim; the claim can still lose, the replay stays."""
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    target = bob.post("target")
    bob.claim(target)
    offline = alice.post("offline", push=False)
    with pytest.raises(AlreadyClaimed):
        alice.claim(target)
    assert remote_item(commons, offline).posted_by == "alice"
    assert alice.pending() == []


# --- corrupt records on the board -------------------------------------------------------------------------
def test_corrupt_records_pushed_by_hand_are_excluded_named_and_repaired(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    good = [bob.post(f"good {i}") for i in range(3)]
    bad_id = "w-ab" + "0" * 8
    bad_path = f"wanted/ab/{bad_id}.json"
    bad_commit = commit_file_to_remote(commons, bad_path, b'{"id": "w-ab00000000", "title": ')  # truncated JSON
    liar_id = "w-cd" + "1" * 8
    liar_path = f"wanted/cd/{liar_id}.json"
    liar = json.loads(remote_item(commons, good[0]).encode())
    liar["status"] = "stolen"
    commit_file_to_remote(commons, liar_path, json.dumps({**liar, "id": liar_id}).encode())

    code, doc = wl_json(alice, "doctor")
    ledger = next(c for c in doc["checks"] if c["name"] == "ledger")
    assert code == 1 and ledger["ok"] is False and bad_commit.decode()[:12] in ledger["detail"]
    assert bad_path in ledger["detail"] and "mallory" in ledger["detail"]
    # neither file ever reaches a reader: the validated state holds only what operations made
    code, doc = wl_json(alice, "browse", "--status", "all")
    assert sorted(i["id"] for i in doc["items"]) == sorted(good) and doc["corrupt"] == []
    code, _, err = wl(alice, "show", liar_id)
    assert code == 1 and "no wanted item matching" in err

    code, out, err = wl(alice, "sync")
    assert code == 1 and bad_commit.decode()[:12] in out and err.count("\n") == 1
    assert "published a repair" in out
    messages = [m for m, _ in remote_ops(commons)]
    assert messages[-1].startswith("wl: repair by alice")
    from board.view import TreeView

    store = Store(commons)
    try:
        tree = store.tree_id(remote_head(commons))
        assert TreeView(store, tree).read(bad_path) is None and TreeView(store, tree).read(liar_path) is None
    finally:
        store.close()
    assert wl(alice, "claim", good[1])[0] == 0
    assert remote_item(commons, good[1]).claimed_by == "alice"
    code, doc = wl_json(bob, "doctor")
    assert code == 0, doc
    assert bob.item(good[1]).claimed_by == "alice"


def test_malformed_trailer_on_the_remote_is_ignored(tmp_path: Path) -> None:
    """A hand-made commit with a bogus Wl-Op trailer neither breaks sync nor gets replayed."""
    commons = make_commons(tmp_path)
    alice, bob = pair(tmp_path, str(commons))
    commit_file_to_remote(
        commons,
        "notes.txt",
        b"hi\n",
        'wl: claim ../x by ../y\n\nWl-Op: {"op":"claim","by":"../y","at":"t"}\n',
    )
    item_id = alice.post("after the odd commit")
    assert alice.sync().replayed == []
    assert remote_item(commons, item_id).posted_by == "alice"


def test_sync_without_remote_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "solo"
    assert CliRunner().invoke(cli, ["--home", str(home), "init", "--handle", "solo"]).exit_code == 0
    rig = Rig(home, "solo")
    code, _, err = wl(rig, "sync")
    assert code == 2 and err == "wl: error: this board has no remote to sync with\n"
    code, doc = wl_json(rig, "post", "--title", "local only")
    assert code == 0 and doc["pushed"] is False and doc["local_reason"] == "this board has no remote"
    assert [op.op for op in rig.pending()] == []  # no remote: nothing is pending, the commit is the board


def test_conflicting_replay_keeps_the_files_the_operation_carried(tmp_path: Path) -> None:
    """Outputs too large to inline travel as blobs beside the op; a refused replay writes them out too."""
    import hashlib

    from board.ids import new_completion_id

    commons = make_commons(tmp_path)
    poster = join_rig(tmp_path, str(commons), "poster")
    alice, bob = pair(tmp_path, str(commons))
    item_id = poster.post("big output")
    alice.claim(item_id)
    output = ("line of a large output\n" * 4000).encode()
    blob = f"blobs/sha256/{hashlib.sha256(output).hexdigest()}"
    with alice.board() as b:
        op = b.new_op(
            "done", item_id, evidence=json.dumps({"output_blob": blob}), completion_id=new_completion_id()
        )
        assert b.mutate(op, attachments={blob: output}, push=False).pushed is False
    poster.op("unclaim", item_id)
    bob.claim(item_id)

    report = alice.sync()
    assert len(report.conflicted) == 1
    kept = json.loads(Path(report.conflicted[0].path).read_text())
    assert kept["op"]["attachments"] == [blob]
    assert kept["attachments"][blob].encode() == output


def test_remote_that_serves_fetches_but_refuses_pushes_keeps_new_work_local(
    tmp_path: Path, http_git: HttpGit
) -> None:
    """With work already pending, a new command whose push fails still commits locally and says so."""
    commons = make_commons(http_git.base)
    alice, bob = pair(tmp_path, http_git.url(commons.name))
    first, second = bob.post("one"), bob.post("two")
    alice.refresh()
    alice.claim(first, push=False)

    def refuse(environ: dict[str, Any], start_response: Any, app: Any) -> Iterable[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"read-only today\n"]

    http_git.on_receive_pack = refuse
    code, doc = wl_json(alice, "claim", second)
    assert code == 0 and doc["pushed"] is False and doc["local_reason"].startswith("push failed")
    assert [(op.op, op.id) for op in alice.pending()] == [("claim", first), ("claim", second)]
    http_git.on_receive_pack = None
    assert [o.id for o in alice.sync().replayed] == [first, second]
    assert remote_item(commons, first).claimed_by == remote_item(commons, second).claimed_by == "alice"
