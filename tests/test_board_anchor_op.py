"""The `anchor` operation: the completer records where it published its result, inside its JSON evidence.

The board knows nothing of chains, so these rules are checked with plain JSON evidence on real rigs and a
real (plain-path) remote, like the other lifecycle rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from remotes import Rig, join_rig, make_commons, remote_item, remote_ops

from board import layout
from board.errors import AlreadyApplied, NotAllowed, RuleError, UsageError, WrongStatus
from board.records import Completion, Item
from board.store import MAIN, Store
from board.view import TreeView

EVIDENCE = {"output": "4", "output_hash": "sha256:" + "ab" * 32, "signature": "0x" + "11" * 65}
DETAILS = {"chain_id": 31337, "contract": "0x" + "cd" * 20, "tx": "0x" + "ef" * 32, "block": 7}


class Trio:
    def __init__(self, tmp_path: Path) -> None:
        self.commons = make_commons(tmp_path)
        self.poster = join_rig(tmp_path, str(self.commons), "poster")
        self.worker = join_rig(tmp_path, str(self.commons), "worker")
        self.other = join_rig(tmp_path, str(self.commons), "other")

    def in_review(self, evidence: str = orjson.dumps(EVIDENCE).decode()) -> str:
        item_id = self.poster.post("anchor me")
        self.worker.claim(item_id)
        self.worker.done(item_id, evidence)
        return item_id


@pytest.fixture
def trio(tmp_path: Path) -> Trio:
    return Trio(tmp_path)


def _completion(commons: Path, item_id: str) -> Completion:
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        comp = TreeView(store, store.tree_id(head)).completion(item_id)
        assert comp is not None
        return comp
    finally:
        store.close()


def _anchor(rig: Rig, item_id: str, details: object = DETAILS, **args: Any) -> None:
    rig.op("anchor", item_id, anchor=details, **args)


def test_the_completer_records_anchor_details_in_its_evidence(trio: Trio) -> None:
    item_id = trio.in_review()
    before = _completion(trio.commons, item_id)
    _anchor(trio.worker, item_id, completion_id=before.id)
    comp = _completion(trio.commons, item_id)
    evidence = orjson.loads(comp.evidence)
    assert evidence == {**EVIDENCE, "anchor": DETAILS}  # every other key as it was
    assert (comp.id, comp.completed_by, comp.completed_at) == (before.id, before.completed_by, before.completed_at)
    item = remote_item(trio.commons, item_id)
    assert item.evidence_url == comp.evidence and item.status == "in_review"
    message, op = remote_ops(trio.commons)[-1]
    assert message.startswith(f"wl: anchor {item_id} by worker")
    assert op is not None and op.args["anchor"] == DETAILS


@pytest.mark.parametrize("who", ["poster", "other"])
def test_only_the_completer_may(trio: Trio, who: str) -> None:
    item_id = trio.in_review()
    with pytest.raises(NotAllowed, match=f"{who} may not record anchor details on wanted item {item_id}: only the "
                                         "completer \\(worker\\) may"):
        _anchor(getattr(trio, who), item_id)
    assert "anchor" not in orjson.loads(_completion(trio.commons, item_id).evidence)


def test_open_claimed_and_withdrawn_items_are_refused(trio: Trio) -> None:
    open_id = trio.poster.post("open one")
    with pytest.raises(WrongStatus, match='has status "open", expected "in_review" or "completed"'):
        _anchor(trio.worker, open_id)
    trio.worker.claim(open_id)
    with pytest.raises(WrongStatus, match='has status "claimed"'):
        _anchor(trio.worker, open_id)
    gone = trio.poster.post("gone")
    trio.poster.op("delete", gone)
    with pytest.raises(WrongStatus, match='has status "withdrawn"'):
        _anchor(trio.worker, gone)


def test_a_completed_item_may_still_be_anchored(trio: Trio) -> None:
    item_id = trio.in_review()
    trio.poster.op("accept", item_id, quality=4)
    _anchor(trio.worker, item_id)
    comp = _completion(trio.commons, item_id)
    assert orjson.loads(comp.evidence)["anchor"] == DETAILS
    assert comp.stamp is not None and comp.stamp["quality"] == 4  # the rating survives
    assert remote_item(trio.commons, item_id).status == "completed"


def test_evidence_that_is_not_a_json_object_is_refused(trio: Trio) -> None:
    for evidence in ("https://example.invalid/pr/1", "[1, 2]"):
        item_id = trio.in_review(evidence)
        with pytest.raises(RuleError, match="not a JSON object"):
            _anchor(trio.worker, item_id)
        assert _completion(trio.commons, item_id).evidence == evidence


@pytest.mark.parametrize("details", [None, "0xabc", [1, 2]])
def test_details_must_be_an_object(trio: Trio, details: object) -> None:
    item_id = trio.in_review()
    with pytest.raises(UsageError, match="anchor details must be an object"):
        _anchor(trio.worker, item_id, details)


def test_the_same_details_twice_is_already_applied_and_new_ones_replace_them(trio: Trio) -> None:
    item_id = trio.in_review()
    _anchor(trio.worker, item_id)
    with pytest.raises(AlreadyApplied):
        _anchor(trio.worker, item_id)
    moved = {**DETAILS, "block": 8}
    _anchor(trio.worker, item_id, moved)
    assert orjson.loads(_completion(trio.commons, item_id).evidence)["anchor"] == moved


def test_details_for_a_replaced_completion_are_refused(trio: Trio) -> None:
    item_id = trio.in_review()
    old = _completion(trio.commons, item_id).id
    trio.poster.op("reject", item_id)
    trio.worker.done(item_id, orjson.dumps({**EVIDENCE, "output": "5"}).decode())
    with pytest.raises(RuleError, match=f"has completion c-[0-9a-f]{{16}} now, not {old}"):
        _anchor(trio.worker, item_id, completion_id=old)


def test_an_offline_anchor_is_replayed_by_sync_and_refused_if_the_completion_changed(trio: Trio) -> None:
    item_id = trio.in_review()
    comp_id = _completion(trio.commons, item_id).id
    trio.worker.op("anchor", item_id, push=False, anchor=DETAILS, completion_id=comp_id)
    assert "anchor" not in orjson.loads(_completion(trio.commons, item_id).evidence)
    report = trio.worker.sync()
    assert [op.op for op in report.replayed] == ["anchor"] and report.pushed
    assert orjson.loads(_completion(trio.commons, item_id).evidence)["anchor"] == DETAILS

    second = trio.in_review()
    first_comp = _completion(trio.commons, second).id
    trio.worker.op("anchor", second, push=False, anchor=DETAILS, completion_id=first_comp)
    trio.poster.op("reject", second)  # meanwhile the poster sends the work back
    report = trio.worker.sync()
    assert [k.op.op for k in report.conflicted] == ["anchor"]
    assert 'has status "claimed"' in report.conflicted[0].reason


def test_a_flat_completion_is_updated_where_it_lives(trio: Trio) -> None:
    """Flat paths survive from wl-board/1 boards (checkpointed as they were): the rule updates them in place.

    Only a checkpoint can bring such a tree onto a validated board, so the rule is checked on the tree itself.
    """
    from board.ops import Op, apply
    from board.store import NewObjects

    item_id = trio.poster.post("flat")
    trio.worker.claim(item_id)
    item = remote_item(trio.commons, item_id)
    evidence = orjson.dumps(EVIDENCE).decode()
    comp = Completion(id="c-" + "0" * 16, wanted_id=item_id, completed_by="worker", evidence=evidence,
                      completed_at=item.updated_at)
    moved = Item(**{**item.to_dict(), "status": "in_review", "evidence_url": evidence, "claim_expires_at": None})
    store = Store(trio.commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        changes: dict[str, bytes | None] = {layout.completion_flat_path(item_id): comp.encode(),
                                            layout.item_path(item_id): moved.encode()}
        new = NewObjects()
        tree = store.build_tree(store.tree_id(head), changes, new)
        store.save(new)
        op = Op(op="anchor", by="worker", at=item.updated_at, id=item_id, args={"anchor": DETAILS})
        applied = apply(TreeView(store, tree), op, datetime.now(UTC))
    finally:
        store.close()
    assert layout.completion_path(item_id) not in applied.changes
    flat = applied.changes[layout.completion_flat_path(item_id)]
    assert flat is not None and orjson.loads(Completion.decode(flat).evidence)["anchor"] == DETAILS
