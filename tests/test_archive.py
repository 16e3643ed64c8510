"""Archiving (issue 15): finished items older than an age move to archive/ by a signed, validated operation.

The boards are real bare commons (a path, and `git daemon` for the command end to end). Items must be older
than a day to be archived, so the history is written with the rigs' clock set 40 days back (the ledger only
refuses operations dated in the future or before the previous one), then the clock comes back for the rest.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from remotes import Rig, join_rig, make_commons, remote_head, remote_item, running_git_daemon
from test_ledger_attacks import remote_file, wl

from board import commits, layout
from board.errors import AlreadyApplied, Archived, NotFound, RuleError, UsageError, WrongStatus
from board.keys import load_private_key
from board.ops import Op
from board.store import MAIN, NewObjects, Store
from board.view import TreeView

MONTH = 30 * 86400


@contextlib.contextmanager
def days_ago(monkeypatch: pytest.MonkeyPatch, days: int) -> Iterator[None]:
    """The rigs' clock (what stamps operations) set back; the validators' own clock is left alone."""
    import board.claims
    import board.commons
    import board.ids
    import board.publish
    import board.service

    real = board.ids.utcnow
    with monkeypatch.context() as m:
        for module in (board.publish, board.service, board.claims, board.commons):
            m.setattr(module, "utcnow", lambda: real() - timedelta(days=days))
        yield


def finished_board(tmp_path: Path, url: str | None, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Rig, Rig, dict[str, str]]:
    """alice and bob; items A completed (with an attestation), B and E withdrawn 40 days ago, C open, D
    completed just now."""
    with days_ago(monkeypatch, 40):
        commons = make_commons(tmp_path / "srv")
        alice, bob = (join_rig(tmp_path, url or str(commons), h) for h in ("alice", "bob"))
        a, b, c, d, e = (alice.post(f"item {k}") for k in "ABCDE")
        for item in (a, d):
            bob.claim(item)
            bob.done(item, "it is done")
        alice.op("accept", a, quality=4)
        bob.op("attest", a, record={"verdict": "VERIFIED"})
        alice.op("delete", b)
        alice.op("delete", e)
    alice.op("accept", d, quality=3)
    return commons, alice, bob, {"A": a, "B": b, "C": c, "D": d, "E": e}


def test_the_archive_rule_moves_finished_old_items_and_refuses_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commons, alice, bob, ids = finished_board(tmp_path, None, monkeypatch)
    a, b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]
    refusals: list[tuple[type[Exception], str | None, dict[str, object]]] = [
        (WrongStatus, None, {"ids": [c], "older_than": MONTH}),  # live
        (RuleError, None, {"ids": [d], "older_than": MONTH}),  # completed, but too young
        (RuleError, None, {"ids": [a, d], "older_than": MONTH}),  # one too young refuses the whole operation
        (UsageError, None, {"ids": [a], "older_than": 3600}),  # an age under a day
        (UsageError, None, {"ids": [a], "older_than": "30d"}),
        (UsageError, None, {"ids": [], "older_than": MONTH}),
        (UsageError, None, {"ids": [a, a], "older_than": MONTH}),
        (UsageError, None, {"ids": a, "older_than": MONTH}),
        (UsageError, a, {"ids": [a], "older_than": MONTH}),  # ids go in args, not op.id
        (NotFound, None, {"ids": ["w-0000000000"], "older_than": MONTH}),
    ]
    before = remote_head(commons)
    for error, op_id, args in refusals:
        with pytest.raises(error):
            bob.op("archive", op_id, **args)
    assert remote_head(commons) == before

    res = bob.op("archive", None, ids=[a, b], older_than=MONTH)  # anyone registered may archive
    assert res.pushed and res.result["archived"] == [a, b]
    for item in (a, b):
        assert remote_file(commons, layout.item_path(item)) is None
        assert remote_file(commons, layout.archive_item_path(item)) is not None
    assert remote_file(commons, layout.completion_path(a)) is None
    assert json.loads(remote_file(commons, layout.archive_completion_path(a)) or b"")["wanted_id"] == a
    assert json.loads(remote_file(commons, f"{layout.archive_attestation_dir(a)}/bob.json") or b"") == {
        "verdict": "VERIFIED"}
    assert remote_file(commons, f"{layout.attestation_dir(a)}/bob.json") is None

    # an archived item is not live: every rule refuses it, and its id cannot be posted again
    for attempt in (lambda: bob.claim(a), lambda: bob.op("attest", a, record={"verdict": "VERIFIED"}),
                    lambda: alice.op("post", a, title="item A"), lambda: alice.op("unclaim", b),
                    lambda: alice.op("accept", a, quality=5)):
        with pytest.raises(Archived, match="is archived"):
            attempt()
    with pytest.raises(AlreadyApplied):
        bob.op("archive", None, ids=[a, b], older_than=MONTH)
    with pytest.raises(RuleError, match="1 of the 2 items are already archived"):
        bob.op("archive", None, ids=[a, ids["E"]], older_than=MONTH)

    carol = join_rig(tmp_path, str(commons), "carol")  # a fresh validator accepts the whole history
    with carol.board() as board:
        state = board.state()
        assert state.excluded == [] and board.ledger.healthy(state)
        with pytest.raises(Archived):
            board.view().item(a)
        assert board.view().archived_item(a) is not None
    assert remote_item(commons, c).status == "open"


def _signed_tree(store: Store, rig: Rig, op: Op, changes: dict[str, bytes | None]) -> bytes:
    """A commit signed by `rig` exactly as wl signs, carrying `op` but whatever tree `changes` make."""
    head = store.ref(MAIN)
    assert head is not None
    tree = store.tree_id(head)
    board_id = TreeView(store, tree).meta()["board_id"]
    new = NewObjects()
    tree = store.build_tree(tree, changes, new)
    sig = commits.sign(load_private_key(rig.home), board_id, head, tree, op.encode())
    commit = store.commit_tree(head, tree, commits.message(op.encode(), op, sig), rig.handle, new)
    assert store.set_ref(MAIN, commit, head)
    return commit


@pytest.mark.parametrize("crafted", ["live item", "extra move"])
def test_a_crafted_archive_of_a_live_item_is_refused_by_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crafted: str
) -> None:
    from board.ids import fmt_time, utcnow

    commons, alice, bob, ids = finished_board(tmp_path, None, monkeypatch)
    a, c = ids["A"], ids["C"]
    store = Store(commons)
    try:
        raw = remote_file(commons, layout.item_path(c))
        move_c = {layout.item_path(c): None, layout.archive_item_path(c): raw}
        named = [c] if crafted == "live item" else [a]
        changes = dict(move_c)
        if crafted == "extra move":  # a valid archive of A whose tree also sneaks C out of the live tree
            view = TreeView(store, store.tree_id(remote_head(commons)))
            for path in (layout.item_path(a), layout.completion_path(a), f"{layout.attestation_dir(a)}/bob.json"):
                changes[path] = None
                changes[layout.archived(path)] = view.read(path)
        op = Op(op="archive", by="bob", at=fmt_time(utcnow()), args={"ids": named, "older_than": MONTH})
        bad = _signed_tree(store, bob, op, changes)
    finally:
        store.close()
    code, out, _ = wl(alice, "sync")
    reason = "the rules refuse its archive" if crafted == "live item" else "its tree is not what its archive makes"
    assert code == 1 and bad.decode()[:12] in out and reason in out
    assert alice.item(c).status == "open"  # the validated state kept it live
    assert remote_file(commons, layout.item_path(c)) is not None  # and the sync's repair put it back
    bob.claim(c)
    assert remote_item(commons, c).claimed_by == "bob"


def test_show_log_and_browse_find_archived_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commons, alice, bob, ids = finished_board(tmp_path, None, monkeypatch)
    a, b = ids["A"], ids["B"]
    bob.op("archive", None, ids=[a, b], older_than=MONTH)
    alice.refresh()

    code, out, _ = wl(alice, "--json", "show", a[2:8])  # a prefix finds it too
    shown = json.loads(out)
    assert code == 0 and shown["archived"] is True and shown["item"]["status"] == "completed"
    assert shown["completion"]["wanted_id"] == a and shown["attestations"] == {"bob": {"verdict": "VERIFIED"}}
    code, out, _ = wl(alice, "show", a)
    assert code == 0 and "completed (archived)" in out

    code, out, _ = wl(alice, "--json", "log", a)
    ops = [(r["op"], r["by"]) for r in json.loads(out)]
    assert ops == [("post", "alice"), ("claim", "bob"), ("done", "bob"), ("accept", "alice"), ("attest", "bob"),
                   ("archive", "bob")]
    assert "ids" not in json.loads(out)[-1]["args"]

    def listed(*args: str) -> list[str]:
        code, out, _ = wl(alice, "--json", "browse", *args)
        assert code == 0, out
        return [i["id"] for i in json.loads(out)["items"]]

    assert a not in listed("--status", "all") and b not in listed("--status", "all")
    assert sorted(listed("--archived")) == sorted([a, b]) == sorted(listed("--status", "archived"))
    assert listed("--archived", "--status", "withdrawn") == [b]
    code, out, _ = wl(alice, "claim", a, "--no-push")
    assert code == 1 and "is archived" in out + _


def test_wl_archive_end_to_end_over_git_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "srv"
    base.mkdir()
    with running_git_daemon(base) as daemon:
        url = daemon.url("commons.git")
        commons, alice, bob, ids = finished_board(tmp_path, url, monkeypatch)
        a, b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]

        p = bob.wl("--json", "archive", "--dry-run")  # the default age: config archive_after, 30 days
        assert p.returncode == 0, p.stderr
        dry = json.loads(p.stdout)
        assert dry["archivable"] == sorted([a, b, ids["E"]]) and dry["older_than"] == MONTH and dry["commits"] == []
        assert remote_file(commons, layout.item_path(a)) is not None  # a dry run changes nothing

        p = bob.wl("archive", "--older-than", "2h")
        assert p.returncode == 2 and p.stderr.startswith("wl: error:") and "Traceback" not in p.stderr
        p = bob.wl("config", "set", "archive_after", "50")
        assert p.returncode == 0
        assert json.loads(bob.wl("--json", "archive", "--dry-run").stdout)["archivable"] == []
        p = bob.wl("--json", "archive", "--older-than", "35d")
        assert p.returncode == 0, p.stderr
        done = json.loads(p.stdout)
        assert done["archived"] == sorted([a, b, ids["E"]]) and [x["pushed"] for x in done["commits"]] == [True]
        assert remote_file(commons, layout.archive_item_path(a)) is not None
        assert json.loads(bob.wl("--json", "archive", "--older-than", "35d").stdout)["archived"] == []

        dave = join_rig(tmp_path, url, "dave")  # validates the archive commit like every other
        p = dave.wl("--json", "show", a)
        assert p.returncode == 0 and json.loads(p.stdout)["archived"] is True
        listed = json.loads(dave.wl("--json", "browse", "--status", "all").stdout)["items"]
        assert sorted(i["id"] for i in listed) == sorted([c, d])
