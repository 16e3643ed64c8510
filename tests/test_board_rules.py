"""Lifecycle rules: who may do what, in which status, and what a refusal says.

Rules are checked through real rigs on a real (plain-path) remote, since a rule is only as good as the state it
is checked against; refusals are also checked at the command line, where users read them. Lease expiry uses
freezegun to move the clock of every rig at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from remotes import Rig, join_rig, make_commons, remote_item

from board import ops
from board.cli.main import cli
from board.errors import (
    AlreadyApplied,
    AlreadyClaimed,
    Ambiguous,
    NotAllowed,
    NotFound,
    NotRegistered,
    UsageError,
    WrongStatus,
)
from board.ids import fmt_time
from board.records import Completion, Item
from board.records import Rig as RigRecord
from board.view import TreeView

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


class Board3:
    """A commons and three rigs: the poster, a worker and a bystander."""

    def __init__(self, tmp_path: Path) -> None:
        self.commons = make_commons(tmp_path)
        url = str(self.commons)
        self.poster = join_rig(tmp_path, url, "poster")
        self.worker = join_rig(tmp_path, url, "worker")
        self.other = join_rig(tmp_path, url, "other")

    def item_in(self, status: str) -> str:
        """A fresh item brought to `status` by the legitimate hands."""
        item_id = self.poster.post(f"item to be {status}")
        if status == "withdrawn":
            self.poster.op("delete", item_id)
        if status in ("claimed", "in_review", "completed"):
            self.worker.claim(item_id)
        if status in ("in_review", "completed"):
            self.worker.done(item_id, "https://example.invalid/pr/1")
        if status == "completed":
            self.poster.op("close", item_id)
        assert remote_item(self.commons, item_id).status == status
        return item_id


@pytest.fixture(scope="module")
def b3(tmp_path_factory: pytest.TempPathFactory) -> Board3:
    """Shared by the module's tests: each test works on items of its own, so they do not interfere."""
    return Board3(tmp_path_factory.mktemp("rules"))


def cli_as(rig: Rig, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(rig.home), *args])
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout, result.stderr


# --- status preconditions ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "actor", "op", "expected"),
    [
        ("in_review", "other", "claim", "open"),
        ("completed", "other", "claim", "open"),
        ("withdrawn", "other", "claim", "open"),
        ("open", "worker", "done", "claimed"),
        ("in_review", "worker", "done", "claimed"),
        ("open", "poster", "accept", "in_review"),
        ("claimed", "poster", "accept", "in_review"),
        ("claimed", "poster", "reject", "in_review"),
        ("open", "poster", "close", "in_review"),
        ("claimed", "poster", "delete", "open"),
        ("in_review", "poster", "delete", "open"),
        ("open", "worker", "unclaim", "claimed"),
        ("completed", "poster", "unclaim", "claimed"),
    ],
)
def test_wrong_status_is_refused_and_named(
    b3: Board3, status: str, actor: str, op: str, expected: str
) -> None:
    item_id = b3.item_in(status)
    rig: Rig = getattr(b3, actor)
    args: dict[str, object] = {}
    if op == "done":
        args = {"evidence": "e", "completion_id": "c-" + "0" * 16}
    if op == "accept":
        args = {"quality": 4}
    head_before = remote_item(b3.commons, item_id)
    with pytest.raises(WrongStatus) as exc:
        rig.op(op, item_id, **args)
    assert str(exc.value).startswith(f'wanted item {item_id} has status "{status}", expected "{expected}"')
    assert exc.value.item_id == item_id and exc.value.status == status
    assert remote_item(b3.commons, item_id) == head_before
    assert rig.pending() == []

    # The same refusal at the command line: exit 1, one line, the same words.
    argv = [op, item_id[:7]]
    if op == "done":
        argv += ["--evidence", "e"]
    if op == "accept":
        argv += ["--quality", "4"]
    code, out, err = cli_as(rig, *argv)
    assert code == 1
    assert err.startswith(f'wl: error: wanted item {item_id} has status "{status}", expected "{expected}"')
    assert err.count("\n") == 1


# --- roles ----------------------------------------------------------------------------------------------
def test_accept_by_the_claimer_is_refused(b3: Board3) -> None:
    item_id = b3.item_in("in_review")
    with pytest.raises(NotAllowed) as exc:
        b3.worker.op("accept", item_id, quality=5)
    assert str(exc.value) == f"worker may not accept wanted item {item_id}: only the poster (poster) may"
    assert remote_item(b3.commons, item_id).status == "in_review"


def test_a_poster_who_claimed_their_own_item_cannot_accept_it(b3: Board3) -> None:
    item_id = b3.poster.post("self-service")
    b3.poster.claim(item_id)
    b3.poster.done(item_id, "did it myself")
    with pytest.raises(NotAllowed) as exc:
        b3.poster.op("accept", item_id, quality=5)
    assert "never the claimer" in str(exc.value) and item_id in str(exc.value)
    # closing without a rating is still the poster's to do
    b3.poster.op("close", item_id)
    assert remote_item(b3.commons, item_id).status == "completed"


@pytest.mark.parametrize("op", ["accept", "reject", "close"])
@pytest.mark.parametrize("actor", ["worker", "other"])
def test_review_by_a_non_poster_is_refused(b3: Board3, op: str, actor: str) -> None:
    item_id = b3.item_in("in_review")
    args = {"quality": 3} if op == "accept" else {}
    with pytest.raises(NotAllowed) as exc:
        getattr(b3, actor).op(op, item_id, **args)
    assert str(exc.value).startswith(f"{actor} may not {op} wanted item {item_id}: only the poster (poster)")
    assert remote_item(b3.commons, item_id).status == "in_review"


@pytest.mark.parametrize("actor", ["worker", "other"])
def test_delete_by_a_non_poster_is_refused(b3: Board3, actor: str) -> None:
    item_id = b3.item_in("open")
    code, _, err = cli_as(getattr(b3, actor), "delete", item_id)
    assert code == 1
    assert err == f"wl: error: {actor} may not delete wanted item {item_id}: only the poster (poster) may\n"
    assert remote_item(b3.commons, item_id).status == "open"


def test_done_by_a_non_claimer_is_refused(b3: Board3) -> None:
    item_id = b3.item_in("claimed")
    for rig in (b3.other, b3.poster):
        with pytest.raises(NotAllowed) as exc:
            rig.done(item_id, "not mine")
        assert (
            str(exc.value)
            == f"{rig.handle} may not complete wanted item {item_id}: only the claimer (worker) may"
        )
    item = remote_item(b3.commons, item_id)
    assert item.status == "claimed" and item.evidence_url is None


def test_claiming_a_claimed_item_names_the_holder(b3: Board3) -> None:
    item_id = b3.item_in("claimed")
    holder = remote_item(b3.commons, item_id)
    with pytest.raises(AlreadyClaimed) as exc:
        b3.other.claim(item_id)
    assert exc.value.holder == "worker"
    assert str(exc.value) == (
        f'wanted item {item_id} has status "claimed", expected "open" '
        f"(claimed by worker until {holder.claim_expires_at})"
    )
    # claiming again what you already hold changes nothing and says so
    with pytest.raises(AlreadyApplied, match="already claimed by you"):
        b3.worker.claim(item_id)
    assert remote_item(b3.commons, item_id) == holder


def test_unclaim_by_claimer_and_by_poster(b3: Board3) -> None:
    a = b3.item_in("claimed")
    b3.worker.op("unclaim", a)
    item = remote_item(b3.commons, a)
    assert (item.status, item.claimed_by, item.claim_expires_at) == ("open", None, None)
    b = b3.item_in("claimed")
    b3.poster.op("unclaim", b)
    assert remote_item(b3.commons, b).status == "open"


def test_unclaim_by_a_bystander_before_expiry_is_refused(b3: Board3) -> None:
    item_id = b3.item_in("claimed")
    code, _, err = cli_as(b3.other, "unclaim", item_id)
    assert code == 1
    assert err == (
        f"wl: error: other may not unclaim wanted item {item_id}: only the claimer, the poster, "
        "or anyone once the lease expired may\n"
    )
    assert remote_item(b3.commons, item_id).claimed_by == "worker"


def test_full_lifecycle_with_reject_and_accept(b3: Board3) -> None:
    item_id = b3.item_in("in_review")
    b3.poster.refresh()
    with b3.poster.board() as b:
        assert b.view().completion(item_id) is not None
    b3.poster.op("reject", item_id, reason="tests fail")
    item = remote_item(b3.commons, item_id)
    assert (item.status, item.claimed_by, item.evidence_url) == ("claimed", "worker", None)
    b3.poster.refresh()
    with b3.poster.board() as b:
        assert b.view().completion(item_id) is None
    b3.worker.done(item_id, "second try")
    b3.poster.op("accept", item_id, quality=4, severity="branch")
    b3.poster.refresh()
    with b3.poster.board() as b:
        comp = b.view().completion(item_id)
    assert comp is not None and comp.evidence == "second try" and comp.completed_by == "worker"
    assert comp.stamp is not None
    assert {k: comp.stamp[k] for k in ("by", "quality", "reliability", "severity")} == {
        "by": "poster",
        "quality": 4,
        "reliability": 4,  # defaults to the quality
        "severity": "branch",
    }
    assert remote_item(b3.commons, item_id).status == "completed"


def test_unknown_and_ambiguous_prefixes(b3: Board3) -> None:
    code, _, err = cli_as(b3.worker, "claim", "w-ffffffffff")
    assert (code, err) == (1, 'wl: error: no wanted item matching "w-ffffffffff"\n')
    for i in range(17):  # 17 ids over 16 first hex digits: at least two share one
        b3.poster.post(f"p{i}")
    b3.worker.refresh()
    with b3.worker.board() as b:
        ids = [i.id for i in b.view().items()]
    firsts = [i[2] for i in ids]
    shared = max(set(firsts), key=firsts.count)
    clash = sorted(i for i in ids if i[2] == shared)
    assert len(clash) > 1
    with pytest.raises(Ambiguous) as exc:
        b3.worker.item(shared)
    assert str(exc.value) == f'"{shared}" matches {len(clash)} items: ' + ", ".join(clash[:10]) + (
        " …" if len(clash) > 10 else ""
    )
    with pytest.raises(NotFound):
        b3.worker.item("w-ffffffffff")


def test_an_unregistered_handle_cannot_post_or_claim(b3: Board3, tmp_path: Path) -> None:
    item_id = b3.item_in("open")
    stranger = join_rig(tmp_path, str(b3.commons), "stranger")  # (joins as "stranger", then acts as "ghost")
    # a rig whose handle is not on the board (config edited by hand, say)
    from board.home import Home

    Home(stranger.home).set_config("handle", "ghost")
    with pytest.raises(NotRegistered, match="'ghost' is not registered"):
        Rig(stranger.home, "ghost").claim(item_id)
    with pytest.raises(NotRegistered):
        Rig(stranger.home, "ghost").post("by nobody")


# --- leases -------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_b3(tmp_path: Path) -> Board3:
    """A board of its own for tests that freeze the clock: validators refuse operations dated before the
    previous one, or far ahead of the real clock, so the shared board must never see 2030."""
    return Board3(tmp_path)


@pytest.fixture
def clock() -> Iterator[object]:
    with freeze_time(T0, tick=False, ignore=["_pytest"]) as frozen:  # pytest keeps its own clock
        yield frozen


def test_expired_claim_can_be_taken_over(fresh_b3: Board3, clock: object) -> None:
    b3 = fresh_b3
    item_id = b3.poster.post("leased")
    b3.worker.claim(item_id, lease_seconds=600)
    assert remote_item(b3.commons, item_id).claim_expires_at == fmt_time(T0 + timedelta(seconds=600))

    clock.move_to(T0 + timedelta(seconds=599))  # type: ignore[attr-defined]
    with pytest.raises(AlreadyClaimed):
        b3.other.claim(item_id)
    with pytest.raises(NotAllowed):
        b3.other.op("unclaim", item_id)

    clock.move_to(T0 + timedelta(seconds=600))  # type: ignore[attr-defined]
    res = b3.other.claim(item_id, lease_seconds=300)
    assert res.pushed and res.result["took_over_from"] == "worker"
    item = remote_item(b3.commons, item_id)
    assert (item.claimed_by, item.claim_expires_at) == ("other", fmt_time(T0 + timedelta(seconds=900)))
    # the previous holder has lost it: its done is refused
    with pytest.raises(NotAllowed):
        b3.worker.done(item_id, "too late")


def test_anyone_may_unclaim_once_the_lease_expired(fresh_b3: Board3, clock: object) -> None:
    b3 = fresh_b3
    item_id = b3.poster.post("abandoned")
    code, _, _ = cli_as(b3.worker, "claim", item_id, "--lease", "1")
    assert code == 0
    clock.move_to(T0 + timedelta(seconds=59))  # type: ignore[attr-defined]
    code, _, err = cli_as(b3.other, "unclaim", item_id)
    assert code == 1 and "may not unclaim" in err
    clock.move_to(T0 + timedelta(seconds=61))  # type: ignore[attr-defined]
    code, out, err = cli_as(b3.other, "--json", "unclaim", item_id)
    assert code == 0, err
    assert remote_item(b3.commons, item_id).status == "open"


def test_expired_claim_takeover_at_the_command_line(fresh_b3: Board3, clock: object) -> None:
    b3 = fresh_b3
    item_id = b3.poster.post("cli lease")
    assert cli_as(b3.worker, "claim", item_id, "--lease", "5")[0] == 0
    clock.move_to(T0 + timedelta(minutes=4))  # type: ignore[attr-defined]
    code, _, err = cli_as(b3.other, "claim", item_id)
    assert code == 1 and "claimed by worker until 2030-05-01T12:05:00Z" in err
    clock.move_to(T0 + timedelta(minutes=6))  # type: ignore[attr-defined]
    code, out, err = cli_as(b3.other, "claim", item_id)
    assert code == 0 and f"Claimed {item_id}" in out
    assert remote_item(b3.commons, item_id).claimed_by == "other"


def test_renew_extends_only_the_holders_lease(fresh_b3: Board3, clock: object) -> None:
    b3 = fresh_b3
    item_id = b3.poster.post("long job")
    b3.worker.claim(item_id, lease_seconds=60)
    clock.move_to(T0 + timedelta(seconds=50))  # type: ignore[attr-defined]
    with pytest.raises(NotAllowed):
        b3.other.op("renew", item_id, lease_seconds=60)
    b3.worker.op("renew", item_id, lease_seconds=60)
    clock.move_to(T0 + timedelta(seconds=100))  # type: ignore[attr-defined]
    with pytest.raises(AlreadyClaimed):  # renewed at 50s for 60s: still held at 100s
        b3.other.claim(item_id)


# --- rules on a plain view (no git): corner cases cheaply ----------------------------------------------
class DictView:
    def __init__(self, items: list[Item], rigs: list[str]) -> None:
        self.items = {i.id: i for i in items}
        self.rigs = {h: RigRecord(h, "0x" + "0" * 40, fmt_time(T0)) for h in rigs}
        self.comps: dict[str, Completion] = {}

    def item(self, item_id: str) -> Item | None:
        return self.items.get(item_id)

    def completion(self, item_id: str) -> Completion | None:
        return self.comps.get(item_id)

    def rig(self, handle: str) -> RigRecord | None:
        return self.rigs.get(handle)

    def read(self, path: str) -> bytes | None:
        return None


def _item(**kw: object) -> Item:
    base: dict[str, object] = dict(
        id="w-0123456789", title="t", posted_by="poster", created_at=fmt_time(T0), updated_at=fmt_time(T0)
    )
    base.update(kw)
    return Item(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [0, -5, 30 * 86400 + 1, "60", True, 1.5])
def test_claim_lease_bounds(lease: object) -> None:
    view = DictView([_item()], ["worker"])
    op = ops.Op("claim", "worker", fmt_time(T0), "w-0123456789", {"lease_seconds": lease})
    with pytest.raises(UsageError, match="lease must be between"):
        ops.apply(view, op, T0)


@pytest.mark.parametrize("quality", [0, 6, "5", None, True])
def test_accept_needs_a_rating_from_1_to_5(quality: object) -> None:
    item = _item(status="in_review", claimed_by="worker")
    view = DictView([item], ["poster", "worker"])
    op = ops.Op("accept", "poster", fmt_time(T0), item.id, {"quality": quality})
    with pytest.raises(UsageError, match="quality must be from 1 to 5"):
        ops.apply(view, op, T0)


def test_claim_writes_exactly_the_item_file() -> None:
    item = _item()
    view = DictView([item], ["worker"])
    applied = ops.apply(view, ops.Op("claim", "worker", fmt_time(T0), item.id, {"lease_seconds": 60}), T0)
    path = f"wanted/01/{item.id}.json"
    assert list(applied.changes) == [path]
    data = applied.changes[path]
    assert data is not None
    claimed = Item.decode(data)
    assert (claimed.status, claimed.claimed_by) == ("claimed", "worker")
    assert claimed.claim_expires_at == fmt_time(T0 + timedelta(seconds=60))
    assert claimed.updated_at == fmt_time(T0)


def test_done_writes_item_and_completion() -> None:
    item = _item(status="claimed", claimed_by="worker", claim_expires_at=fmt_time(T0))
    view = DictView([item], ["worker"])
    op = ops.Op(
        "done", "worker", fmt_time(T0), item.id, {"evidence": "proof", "completion_id": "c-" + "a" * 16}
    )
    applied = ops.apply(view, op, T0)
    assert sorted(applied.changes) == [f"completions/01/{item.id}.json", f"wanted/01/{item.id}.json"]
    comp_raw = applied.changes[f"completions/01/{item.id}.json"]
    assert comp_raw is not None
    comp = Completion.decode(comp_raw)
    assert (comp.evidence, comp.completed_by, comp.wanted_id) == ("proof", "worker", item.id)


def test_treeview_rules_see_the_committed_state(b3: Board3) -> None:
    """A rule applied to a TreeView gets a fresh decode each time: a refused op leaves nothing behind."""
    item_id = b3.item_in("open")
    with b3.other.board() as b:
        b.refresh()
        view = TreeView(b.store, b.store.tree_id(b.head()))
        with pytest.raises(WrongStatus):
            ops.apply(view, b.new_op("done", item_id, evidence="x", completion_id="c-" + "1" * 16), T0)
        assert view.item(item_id).status == "open"  # type: ignore[union-attr]


def test_an_item_too_large_for_readers_is_refused_as_a_usage_error(b3: Board3) -> None:
    with pytest.raises(UsageError, match="not a valid record: description is too long"):
        b3.poster.post("big", description="x" * (3 << 20))
    assert b3.poster.pending() == []
