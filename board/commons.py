"""Creating a commons: a bare repository whose first commit holds only board.json."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson

from board import layout, ops
from board.errors import UsageError
from board.ids import fmt_time, new_board_id, utcnow
from board.records import board_meta, dumps
from board.store import MAIN, NewObjects, Store

__all__ = ["create_commons"]


def _initial_commit(store: Store, name: str, when: datetime) -> tuple[bytes, str]:
    board_id = new_board_id()
    meta = board_meta(name, board_id, fmt_time(when))
    trailer = orjson.dumps({"op": "create", "by": "wl", "at": fmt_time(when), "args": meta}).decode()
    message = f"wl: create board {board_id}\n\n{ops.TRAILER}{trailer}\n"
    commit = store.make_commit(None, {layout.BOARD: dumps(meta)}, message, "wl", NewObjects())
    store.force_ref(MAIN, commit)
    return commit, board_id


def create_commons(path: Path, name: str | None = None) -> str:
    """A new bare commons at path; returns its board id."""
    if path.exists() and any(path.iterdir()):
        raise UsageError(f"{path} already exists and is not empty")
    store = Store.init_bare(path)
    try:
        _, board_id = _initial_commit(store, name or path.name.removesuffix(".git"), utcnow())
        (path / "git-daemon-export-ok").touch()
    finally:
        store.close()
    return board_id
