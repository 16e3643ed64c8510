"""The items parse cache (`cache/items.json`): what TreeView.items() made of each bucket, keyed by tree sha; and,
in memory, the rows a whole-tree check already made of a bucket, for the index build that follows it.

Only a speed-up: keyed by content-addressed tree shas it can never be stale, only missing; a file that does
not read back as this version's cache is ignored. Written 0600 through a temporary file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


def load(path: Path, version: int) -> dict[str, list[dict[str, Any]]]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version:
        return {}
    buckets = data.get("buckets")
    if not isinstance(buckets, dict):
        return {}
    return {k: v for k, v in buckets.items() if isinstance(v, list) and all(isinstance(r, dict) for r in v)}


def save(path: Path, version: int, data: dict[str, list[dict[str, Any]]]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(orjson.dumps({"version": version, "buckets": data}))
        os.replace(tmp, path)
    except OSError:
        pass


REMEMBERED = 1024  # buckets held in memory at most


class _Remembered(threading.local):
    """Per thread: two joins in two threads neither share rows nor end each other's collecting."""

    def __init__(self) -> None:
        self.on = False
        self.rows: dict[tuple[str, bytes], list[dict[str, Any]]] = {}


_here = _Remembered()


@contextlib.contextmanager
def collecting() -> Iterator[None]:
    """Within the block, a whole-tree check remembers the rows it made of each bucket for an index build that
    follows it (a join); outside, nothing is held. Everything remembered is dropped when the block ends."""
    was = _here.on
    _here.on = True
    try:
        yield
    finally:
        _here.on = was
        if not was:
            _here.rows.clear()


def remember(path: str, tree: bytes, rows: list[dict[str, Any]]) -> None:
    """Rows (as TreeView.bucket_rows makes them) of the bucket tree at `path`, made by a check of every record."""
    if not _here.on:
        return
    if len(_here.rows) >= REMEMBERED:
        _here.rows.clear()
    _here.rows[(path, tree)] = rows


def recall(path: str, tree: bytes) -> list[dict[str, Any]] | None:
    """The rows remembered for this bucket tree, once (they are dropped as they are taken)."""
    return _here.rows.pop((path, tree), None)
