"""Property tests of the ledger: any sequence of valid operations validates from scratch, and changing any
byte of a committed file or of a commit's trailers is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remotes import Rig, join_rig, make_commons, remote_head

from board.errors import BoardError
from board.ledger import Advance, Ledger
from board.store import NewObjects, Store
from board.treecheck import changed_paths

ACTIONS = st.lists(
    st.tuples(st.sampled_from(["post", "claim", "unclaim", "done", "accept", "reject", "close", "delete"]),
              st.integers(0, 2), st.sampled_from(["alice", "bob"])),
    min_size=1, max_size=12,
)


def _scratch_validate(commons: Path, head: bytes, cache: Path) -> tuple[Any, Advance]:
    store = Store(commons)
    try:
        return Ledger(store, cache).advance(head, save=False)
    finally:
        store.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Rig]]:
    base = tmp_path_factory.mktemp("props")
    commons = make_commons(base)
    return commons, {h: join_rig(base, str(commons), h) for h in ("alice", "bob")}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_random_valid_operations_always_validate(pair: tuple[Path, dict[str, Rig]], actions: list[Any],
                                                 tmp_path: Path) -> None:
    commons, rigs = pair
    items: list[str] = []
    for name, index, who in actions:
        rig = rigs[who]
        try:
            if name == "post" or not items:
                items.append(rig.post(f"item {len(items)}"))
            elif name == "done":
                rig.done(items[index % len(items)], "evidence")
            elif name == "accept":
                rig.op("accept", items[index % len(items)], quality=3)
            else:
                rig.op(name, items[index % len(items)])
        except BoardError:
            continue  # a refused operation commits nothing
    head = remote_head(commons)
    state, found = _scratch_validate(commons, head, tmp_path / "ledger.json")
    store = Store(commons)
    try:
        assert found.bad == [] and state.tree.encode() == store.tree_id(head)
    finally:
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000), where=st.integers(0, 10_000), flip=st.integers(1, 255),
       in_file=st.booleans())
def test_changing_any_byte_of_a_file_or_trailer_is_caught(pair: tuple[Path, dict[str, Rig]], pick: int,
                                                          where: int, flip: int, in_file: bool,
                                                          tmp_path: Path) -> None:
    commons, rigs = pair
    if len(list(Store(commons).first_parent_chain(remote_head(commons), None))) < 6:
        item = rigs["alice"].post("tamper target")
        rigs["bob"].claim(item)
        rigs["bob"].done(item, "e")
    store = Store(commons)
    try:
        chain = store.first_parent_chain(remote_head(commons), None)[1:]
        sha = chain[pick % len(chain)]
        original = store.commit(sha)
        parent = original.parents[0]
        new = NewObjects()
        if in_file:
            path = changed_paths(store, store.tree_id(parent), original.tree)[0]
            data = bytearray(store.read(original.tree, path) or b"")
            data[where % len(data)] ^= flip
            tree = store.build_tree(original.tree, {path: bytes(data)}, new)
            message = original.message.decode()
        else:
            raw = bytearray(original.message)
            trailers = raw.index(b"\n\n") + 2
            raw[trailers + where % (len(raw) - trailers - 1)] ^= flip  # any byte of Wl-Op or Wl-Sig
            tree, message = original.tree, raw.decode("utf-8", "replace")
        tampered = store.commit_tree(parent, tree, message, "mallory", new)
    finally:
        store.close()
    _, found = _scratch_validate(commons, tampered, tmp_path / "ledger.json")
    assert [b.commit for b in found.bad] == [tampered.decode()]
