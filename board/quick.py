"""A warm `wl browse` without git: answered from the index when nothing it was built from has changed.

The full path (board.service, dulwich, the ledger's state, the claim lanes, then the index) costs about 100 ms
of imports and reads before the query. After a full answer, `record` stores in the index what that answer was
made from, as far as plain files say it: a stamp of the local main ref, the ledger's cached state
(`ledger.json`, byte for byte) and this rig's claim-lane refs; with it the tree the index rows were synced to,
the records the lanes laid over them, and the warnings and skipped entries the reading gave. `answer`
recomputes the stamp from those files. When it is the recorded one and the rows are still those of the
recorded tree (every sync of the index to another tree rewrites that mark in the same transaction as its
rows, board/index.py), the listing comes from SQLite with the same overlay, the same skipped entries and the
same warnings. Anything unexpected (a ref file that is not a plain sha, a ref being written, no ledger cache,
an index of another version) is no answer here: the caller takes the full path, which decides everything
exactly as before. A lane the full path refused is never recorded: its refusal can depend on the clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from board.home import Home
from board.index import ARCHIVE, INDEX_VERSION, LIVE, SYNCED, Query, Result, overlaid, select
from board.records import Item, RecordError

if TYPE_CHECKING:
    from board.view import TreeView

STAMP_VERSION = b"wl-quick/1"
FAST = "fast:"  # meta key + top: the record of the last full answer
MAIN_REF = "refs/heads/main"
LANES = "refs/wl/lanes/"  # board/lanes.py LOCAL_PREFIX: this rig's copies of the lanes it fetched
_SHA = re.compile(rb"^[0-9a-f]{40}\n?\Z")
_LANE_WARNING = "skipped claim lane"  # board/claims.py: a refused lane (its time may come)


class _Unsure(Exception):
    """Something plain files cannot say for certain: take the full path."""


def _loose(path: Path) -> bytes | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        raise _Unsure() from None
    if not _SHA.match(raw):
        raise _Unsure()  # a symbolic ref, a half-written file: not for this reader
    return raw[:40]


def _packed(repo: Path) -> dict[str, bytes]:
    try:
        raw = (repo / "packed-refs").read_bytes()
    except FileNotFoundError:
        return {}
    except OSError:
        raise _Unsure() from None
    out: dict[str, bytes] = {}
    for line in raw.splitlines():
        if not line or line[:1] in (b"#", b"^"):
            continue
        sha, _, name = line.partition(b" ")
        if not _SHA.match(sha):
            raise _Unsure()
        out[name.decode("utf-8", "replace")] = sha
    return out


def _refs(repo: Path) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The main ref and the lane refs (loose beats packed, as git reads them)."""
    packed = _packed(repo)
    main = _loose(repo / MAIN_REF) or packed.get(MAIN_REF)
    if main is None or (repo / f"{MAIN_REF}.lock").exists():
        raise _Unsure()
    lanes = {name: sha for name, sha in packed.items() if name.startswith(LANES)}
    top = repo / LANES
    for folder, _, files in os.walk(top):
        for name in files:
            if name.endswith(".lock"):
                raise _Unsure()  # a lane being written
            path = Path(folder) / name
            sha = _loose(path)
            if sha is not None:
                lanes[LANES + path.relative_to(top).as_posix()] = sha
    return main, sorted(lanes.items())


def stamp(home: Home) -> str | None:
    """What a browse view is made from, as one hash; None when plain files cannot say."""
    try:
        main, lanes = _refs(home.repo_path)
        ledger = (home.cache_dir / "ledger.json").read_bytes()
    except (_Unsure, OSError):
        return None
    h = hashlib.sha256(STAMP_VERSION + b"\0" + main + b"\0")
    h.update(hashlib.sha256(ledger).digest())
    for name, sha in lanes:
        h.update(name.encode() + b"\0" + sha + b"\n")
    return h.hexdigest()


@dataclass
class Answer:
    result: Result
    corrupt: list[str]  # skipped entries, as the full path's view.corrupt lists them


@contextmanager
def _db(home: Home) -> Iterator[sqlite3.Connection]:
    path = home.cache_dir / "index.sqlite"
    if not path.is_file():
        raise _Unsure()  # never create it here: the full path creates it 0600
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def answer(home: Home, q: Query) -> Answer | None:
    """The listing from the index when the recorded full answer is still current, else None."""
    top = ARCHIVE if q.archived else LIVE
    now = stamp(home)
    if now is None:
        return None
    try:
        with _db(home) as db:
            db.execute("BEGIN")  # one snapshot: the mark, the record and the rows agree
            if _meta(db, "version") != INDEX_VERSION:
                return None
            raw = _meta(db, FAST + top)
            rec = orjson.loads(raw) if raw is not None else None
            if (not isinstance(rec, dict) or rec.get("stamp") != now or _meta(db, SYNCED + top) != rec.get("tree")
                    or _meta(db, "board") != rec.get("board")):
                return None  # another state, rows of another tree, or a file that is no longer this board's
            lay = {d["id"]: Item.from_dict(d) for d in rec["overlay"]}
            result = overlaid(q, lay, lambda sub: select(db, sub)) if lay and not q.archived else select(db, q)
            db.execute("COMMIT")
    except (_Unsure, sqlite3.Error, RecordError, ValueError, TypeError, KeyError):
        return None
    for name, message in rec["warnings"]:
        logging.getLogger(str(name)).warning("%s", message)
    return Answer(result, [str(path) for path, _ in rec["corrupt"]])


class Capture(logging.Handler):
    """The warnings the full path logs (skipped entries, refused lanes), to replay them with its answer."""

    KEEP = 100  # distinct messages: the CLI prints a screenful of them (board/cli/output.py MAX_WARNINGS)

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[str, str]] = []
        self._texts: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text not in self._texts and len(self.seen) < self.KEEP:
            self._texts.add(text)
            self.seen.append((record.name, text))

    @contextmanager
    def on(self) -> Iterator[Capture]:
        logger = logging.getLogger("wl")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


def record(home: Home, before: str | None, view: TreeView, q: Query, warnings: list[tuple[str, str]]) -> None:
    """Remember the full answer just given (made from `view` while the stamp read `before`)."""
    if before is None or any(m.startswith(_LANE_WARNING) for _, m in warnings) or stamp(home) != before:
        return  # no stamp, a refused lane, or something changed while the full path read
    top = ARCHIVE if q.archived else LIVE
    lay = [] if q.archived else [i.to_dict() for i in view.overlay.values()]
    rec: dict[str, Any] = {"stamp": before, "tree": view.tree.decode(), "overlay": lay, "warnings": warnings,
                           "corrupt": list(view.skipped.items())}
    try:
        with _db(home) as db:
            db.execute("BEGIN IMMEDIATE")
            rec["board"] = _meta(db, "board")  # as the full path's index check just found it
            if _meta(db, "version") == INDEX_VERSION and _meta(db, SYNCED + top) == rec["tree"]:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (FAST + top, orjson.dumps(rec).decode()))
            db.execute("COMMIT")
    except (_Unsure, sqlite3.Error):
        return  # only a speed-up

