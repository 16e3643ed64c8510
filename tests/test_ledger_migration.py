"""wl-board/1 boards (unsigned history) reach wl-board/2 through one signed checkpoint; a later checkpoint is
refused."""

from __future__ import annotations

import json
from pathlib import Path

from remotes import join_rig, remote_head, remote_item, remote_ops

from board.ids import fmt_time, utcnow
from board.keys import load_private_key
from board.ledger import Ledger
from board.ops import Op
from board.publish import Chain
from board.records import Item, Rig, dumps
from board.store import MAIN, NewObjects, Store


def legacy_commons(base: Path) -> tuple[Path, str]:
    """A commons as wl-board/1 wrote it: unsigned commits, one trailer, an item and a rig."""
    path = base / "old.git"
    store = Store.init_bare(path)
    try:
        now = fmt_time(utcnow())
        meta = {"format": "wl-board/1", "name": "old", "board_id": "00112233aabbccdd", "created_at": now}
        head = store.make_commit(None, {"board.json": dumps(meta)}, "wl: create board\n", "wl", NewObjects())
        rig = Rig(handle="olga", address="0x" + "12" * 20, registered_at=now, display_name="olga")
        head = store.make_commit(head, {"rigs/olga.json": rig.encode()}, "wl: join by olga\n", "olga", NewObjects())
        item = Item(id="w-ab12345678", title="from the old days", posted_by="olga", created_at=now, updated_at=now)
        head = store.make_commit(head, {"wanted/ab/w-ab12345678.json": item.encode()}, "wl: post\n", "olga",
                                 NewObjects())
        store.force_ref(MAIN, head)
    finally:
        store.close()
    (path / "git-daemon-export-ok").touch()
    return path, "w-ab12345678"


def test_a_legacy_board_is_checkpointed_by_the_next_mutation_and_then_validated(tmp_path: Path) -> None:
    commons, old_item = legacy_commons(tmp_path)
    alice = join_rig(tmp_path, str(commons), "alice")  # joining is the next mutation: it checkpoints
    ops = [op for _, op in remote_ops(commons)]
    assert [(o.op, o.by) for o in ops[-2:] if o] == [("join", "alice"), ("checkpoint", "alice")]
    store = Store(commons)
    try:
        meta = json.loads(store.read(store.tree_id(remote_head(commons)), "board.json") or b"")
        assert meta["format"] == "wl-board/2" and meta["board_id"] == "00112233aabbccdd"
    finally:
        store.close()
    alice.claim(old_item)  # the old records carry over
    assert remote_item(commons, old_item).claimed_by == "alice"
    bob = join_rig(tmp_path, str(commons), "bob")  # a fresh validator starts at the checkpoint
    with bob.board() as b:
        state = b.state()
        assert not state.legacy and state.excluded == [] and b.ledger.healthy(state)

    # a second checkpoint, even one signed by a registered rig, is refused
    store = Store(commons)
    try:
        head = remote_head(commons)
        state, _ = Ledger(store, tmp_path / "scratch.json").advance(head, save=False)
        chain = Chain.on(store, state, [load_private_key(alice.home)], head)
        op = Op(op="checkpoint", by="alice", at="", args={"format": "wl-board/2"})
        chain._stamp(op)
        fake = chain._sign_commit(op, store.tree_id(head))
        assert store.set_ref(MAIN, fake, head)
    finally:
        store.close()
    code = bob.wl("sync")
    assert code.returncode == 1 and fake.decode()[:12] in code.stdout and "already wl-board/2" in code.stdout


def test_joining_a_legacy_board_that_holds_a_bad_entry_is_one_clear_error(tmp_path: Path) -> None:
    """Someone pushed a file no valid board holds into the wl-board/1 tree: the checkpoint a join would make is
    refused with one line and exit 1, not an internal error, and the home is left without a clone."""
    import subprocess

    from remotes import WL

    commons, _ = legacy_commons(tmp_path)
    store = Store(commons)
    try:
        head = remote_head(commons)
        bad = store.make_commit(head, {"wanted/ab/notes.txt": b"not a record"}, "wl: junk\n", "mallory", NewObjects())
        store.force_ref(MAIN, bad)
    finally:
        store.close()
    home = tmp_path / "alice-home"
    p = subprocess.run([WL, "--home", str(home), "join", str(commons), "--handle", "alice"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wl: error: ") and "checkpointed" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and "internal" not in p.stderr
    assert not (home / "board.git").exists()
