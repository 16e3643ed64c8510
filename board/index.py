"""The browse index: one SQLite row per item of the validated state, maintained bucket by bucket.

`wl browse` at 100,000 items must not parse 100,000 files. The index (in the home's cache, 0600) holds one row
per item with the columns browse filters and sorts on, the skipped entries of each bucket, and one row per bucket
(`wanted/ab`, `archive/wanted/ab`) with the tree sha it was read from. On each query the view's bucket shas are
compared with the index and only the buckets that changed are re-read, through the same reader as
`TreeView.items()` (board/view.py), so hostile entries are skipped with the same warnings. Git trees are
content-addressed, so a row keyed by its bucket's sha is never stale, only missing: the index caches what the
reader made of a tree, it decides nothing. A file that is not our index (corrupt, another version, another
board's) is deleted and rebuilt; every value from the board reaches SQL as a parameter, never as SQL text; rows
a query returns are validated again as items before use. If SQLite fails anyway, the query runs on a full scan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from board import parsecache
from board.bulk import paused_gc
from board.records import Item, RecordError

if TYPE_CHECKING:
    from board.view import TreeView

INDEX_VERSION = "3"
LIVE, ARCHIVE = "wanted", "archive/wanted"
PRELOAD_BUCKETS = 8  # changed buckets from which a sync reads their records in one pass over the pack
FLAT = "\0flat"  # pseudo-bucket for legacy flat files `wanted/w-….json` (no tree entry name holds a NUL)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, sha TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT NOT NULL, bucket TEXT NOT NULL, flat INTEGER NOT NULL, archived INTEGER NOT NULL,
    status TEXT NOT NULL, type TEXT NOT NULL, priority INTEGER NOT NULL, created_at TEXT NOT NULL,
    project TEXT NOT NULL, posted_by TEXT NOT NULL, claimed_by TEXT, body BLOB NOT NULL,
    PRIMARY KEY (bucket, id)
);
CREATE INDEX IF NOT EXISTS items_order ON items (archived, status, priority, created_at, id);
CREATE TABLE IF NOT EXISTS tags (bucket TEXT NOT NULL, id TEXT NOT NULL, tag TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_by_item ON tags (bucket, id, tag);
CREATE TABLE IF NOT EXISTS skips (bucket TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS skips_by_bucket ON skips (bucket);
CREATE TABLE IF NOT EXISTS counts (bucket TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS counts_by_bucket ON counts (bucket);
"""
SYNCED = "synced:"  # meta key + top: the tree the top's rows were last brought up to (same transaction)

# the indexes a first build creates after its rows rather than maintaining them row by row (same SQL as SCHEMA's)
BULK_INDEXES = [(line.split()[5], line) for line in SCHEMA.splitlines()
                if line.startswith("CREATE INDEX") and line.split()[5] in ("items_order", "tags_by_item")]


@dataclass
class Query:
    """What browse asks for; None means any. `tags`: every one must be on the item."""

    status: str | None = "open"
    archived: bool = False
    type: str | None = None
    project: str | None = None
    priority: int | None = None
    posted_by: str | None = None
    claimed_by: str | None = None
    involves: str | None = None  # posted or claimed by (`--mine`)
    tags: tuple[str, ...] = ()
    limit: int | None = 50
    only: tuple[str, ...] | None = None  # just these ids (the overlaid ones, below)
    count: bool = True  # False: the items only (total is how many were returned, `others` stays empty)

    def matches(self, item: Item) -> bool:
        """The same filter in Python (the full-scan fallback)."""
        return (
            (self.status is None or item.status == self.status)
            and (self.type is None or item.type == self.type)
            and (self.project is None or item.project == self.project)
            and (self.priority is None or item.priority == self.priority)
            and (self.posted_by is None or item.posted_by == self.posted_by)
            and (self.claimed_by is None or item.claimed_by == self.claimed_by)
            and (self.involves is None or self.involves in (item.posted_by, item.claimed_by))
            and all(t in item.tags for t in self.tags)
            and (self.only is None or item.id in self.only)
        )


@dataclass
class Result:
    items: list[Item]
    total: int  # items matching (before --limit)
    others: dict[str, int] = field(default_factory=dict)  # when `status` is set: the other statuses' counts


def sort_key(item: Item) -> tuple[int, str, str]:
    return (item.priority, item.created_at, item.id)


def scan(items: list[Item], q: Query) -> Result:
    """The query over a full list of items (no index)."""
    unfiltered = Query(**{**q.__dict__, "status": None})
    pool = [i for i in items if unfiltered.matches(i)]
    hits = sorted((i for i in pool if q.status is None or i.status == q.status), key=sort_key)
    others: dict[str, int] = {}
    if q.status is not None:
        for i in pool:
            if i.status != q.status:
                others[i.status] = others.get(i.status, 0) + 1
    return Result(hits[: q.limit] if q.limit is not None else hits, len(hits), others)


def scan_view(view: TreeView, q: Query) -> Result:
    """The query on a full read of the view (live items, or the archived ones)."""
    if not q.archived:
        return scan(view.items(), q)
    buckets, flat = view.buckets(ARCHIVE)
    items = [i for name, sha in buckets.items() for i in view.rows_items(view.bucket_rows(ARCHIVE, name, sha))]
    seen = {i.id for i in items}
    items += [i for i in view.rows_items(view.flat_rows(ARCHIVE, flat)) if i.id not in seen]
    return scan(items, q)


def overlaid(q: Query, overlay: dict[str, Item], ask: Callable[[Query], Result]) -> Result:
    """The query when some items' records are overridden (claim lanes folded over main, board/lanes.py): those
    items are judged on their overlaid record, every other comes from `ask` (the index) as it is."""
    ids = tuple(sorted(overlay))
    base = ask(replace(q, limit=None if q.limit is None else q.limit + len(ids)))
    hidden = ask(replace(q, only=ids, limit=None))  # main's records of the overlaid items, as counted in base
    shown = scan(list(overlay.values()), replace(q, limit=None))
    items = sorted([i for i in base.items if i.id not in overlay] + shown.items, key=sort_key)
    others = dict(base.others)
    for status, n in hidden.others.items():
        others[status] = others.get(status, 0) - n
    for status, n in shown.others.items():
        others[status] = others.get(status, 0) + n
    return Result(items[: q.limit] if q.limit is not None else items, base.total - hidden.total + shown.total,
                  {s: n for s, n in others.items() if n > 0})


class IndexCorrupt(Exception):
    """The file is not an index this version wrote for this board."""


class BrowseIndex:
    def __init__(self, path: Path, board_id: str) -> None:
        self.path = path
        self.board_id = board_id
        self.reread: list[str] = []  # buckets (re)read by the last sync: observable, for tests and benchmarks

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def _check(self, db: sqlite3.Connection) -> None:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [("version", INDEX_VERSION), ("board", self.board_id)])
            return
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        meta = {k: v for k, v in meta.items() if k in ("version", "board")}  # the rest: board/quick.py's records
        if meta != {"version": INDEX_VERSION, "board": self.board_id} or not {"buckets", "items", "tags", "skips",
                                                                              "counts"} <= tables:
            raise IndexCorrupt(f"{self.path} is not this board's index (version {INDEX_VERSION})")

    def query(self, view: TreeView, q: Query) -> Result:
        """Bring the index up to the view's tree (changed buckets only), then answer from it."""
        for attempt in (1, 2):
            try:
                with self._open() as db, paused_gc():
                    self._check(db)
                    self._sync(db, view, ARCHIVE if q.archived else LIVE)
                    return self._select(db, q)
            except (sqlite3.Error, IndexCorrupt, RecordError, ValueError, TypeError, KeyError):
                if attempt == 2:
                    break
                self.drop()
        return scan_view(view, q)  # the index is only a speed-up

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{self.path}{suffix}").unlink()

    # --- keeping up with the tree --------------------------------------------------------------------
    def _sync(self, db: sqlite3.Connection, view: TreeView, top: str) -> None:
        self.reread = []
        buckets, flat = view.buckets(top)
        want = {f"{top}/{name}": sha.decode() for name, sha in buckets.items()}
        if flat:
            want[f"{top}/{FLAT}"] = orjson.dumps(sorted((n, s.hex()) for n, _, s in flat)).decode()
        have = dict(db.execute("SELECT name, sha FROM buckets WHERE name LIKE ? ESCAPE '!'", (_like(top),)))
        changed = [b for b, sha in want.items() if have.get(b) != sha]
        gone = [b for b in have if b not in want]
        synced = db.execute("SELECT value FROM meta WHERE key = ?", (SYNCED + top,)).fetchone()
        if len(changed) >= PRELOAD_BUCKETS:
            _preload(view, top, changed, buckets)
        if changed or gone or synced != (view.tree.decode(),):
            bulk = not have and len(changed) >= PRELOAD_BUCKETS  # a first build: index the rows once, at the end
            db.execute("BEGIN IMMEDIATE")
            try:
                if bulk:
                    for name, _ in BULK_INDEXES:
                        db.execute(f"DROP INDEX IF EXISTS {name}")
                for b in gone + [c for c in changed if c in have]:
                    for table in ("items", "tags", "skips", "counts"):
                        db.execute(f"DELETE FROM {table} WHERE bucket = ?", (b,))  # noqa: S608 - fixed names
                    db.execute("DELETE FROM buckets WHERE name = ?", (b,))
                for b in changed:
                    self._store(db, view, top, b, buckets, flat)
                    db.execute("INSERT INTO buckets VALUES (?, ?)", (b, want[b]))
                if bulk:
                    for _, sql in BULK_INDEXES:
                        db.execute(sql)
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SYNCED + top, view.tree.decode()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.reread = changed
        for path, reason in db.execute("SELECT path, reason FROM skips WHERE bucket LIKE ? ESCAPE '!' "
                                       "ORDER BY bucket, seq", (_like(top),)):
            view.note_skip(path, reason)  # the same warnings a full read gives, every time

    def _store(self, db: sqlite3.Connection, view: TreeView, top: str, bucket: str, buckets: dict[str, bytes],
               flat: list[Any]) -> None:
        name = bucket[len(top) + 1:]
        if name == FLAT:
            rows = view.flat_rows(top, flat)
        else:  # what a check of every record (a join's checkpoint) already made of it, else read it
            rows = parsecache.recall(bucket, buckets[name]) or view.bucket_rows(top, name, buckets[name])
        items: list[tuple[Any, ...]] = []
        tags: list[tuple[str, str, str]] = []
        skips: list[tuple[str, int, str, str]] = []
        for seq, row in enumerate(rows):
            if "skip" in row:
                skips.append((bucket, seq, str(row["skip"]), str(row["reason"])))
                continue
            d = row["item"]
            items.append((d["id"], bucket, int(name == FLAT), int(top == ARCHIVE), d["status"], d["type"],
                          d["priority"], d["created_at"], d["project"], d["posted_by"], d["claimed_by"],
                          orjson.dumps(d)))
            tags.extend((bucket, d["id"], t) for t in set(d["tags"]))
        db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", items)
        db.executemany("INSERT INTO tags VALUES (?, ?, ?)", tags)
        db.executemany("INSERT INTO skips VALUES (?, ?, ?, ?)", skips)
        per_status: dict[str, int] = {}
        for values in items:
            per_status[values[4]] = per_status.get(values[4], 0) + 1
        db.executemany("INSERT INTO counts VALUES (?, ?, ?)", [(bucket, st, n) for st, n in per_status.items()])

    # --- answering -----------------------------------------------------------------------------------
    def _select(self, db: sqlite3.Connection, q: Query) -> Result:
        return select(db, q)


def select(db: sqlite3.Connection, q: Query) -> Result:
    """The query on an index whose rows are current (one read transaction, so one state of it)."""
    where: list[str] = ["archived = ?"]
    params: list[Any] = [int(q.archived)]
    top = ARCHIVE if q.archived else LIVE
    flat = db.execute("SELECT 1 FROM buckets WHERE name = ?", (f"{top}/{FLAT}",)).fetchone() is not None
    if flat:  # legacy flat files, rare:
        # a flat file whose id is also in a bucket is the reader's duplicate; the bucket's copy wins
        where.append("(flat = 0 OR id NOT IN (SELECT id FROM items WHERE flat = 0))")
    for column, value in (("type", q.type), ("project", q.project), ("priority", q.priority),
                          ("posted_by", q.posted_by), ("claimed_by", q.claimed_by)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if q.involves is not None:
        where.append("(posted_by = ? OR claimed_by = ?)")
        params += [q.involves, q.involves]
    if q.only is not None:
        where.append(f"id IN ({', '.join('?' * len(q.only))})" if q.only else "0")
        params += list(q.only)
    for tag in q.tags:
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.bucket = items.bucket AND t.id = items.id "
                     "AND t.tag = ?)")
        params.append(tag)
    base = " AND ".join(where)
    if not q.count:
        counts = {}
    elif len(where) == 1:  # no filter but the status (browse's default): the per-bucket counts, not 100,000 rows
        counts = dict(db.execute("SELECT status, SUM(n) FROM counts WHERE bucket LIKE ? ESCAPE '!' "
                                 "GROUP BY status", (_like(top),)))
    else:
        counts = dict(db.execute(f"SELECT status, COUNT(*) FROM items WHERE {base} GROUP BY status", params))  # noqa: S608
    sql, args = f"SELECT body FROM items WHERE {base}", list[Any](params)  # noqa: S608 - clauses are fixed text
    if q.status is not None:
        sql += " AND status = ?"
        args.append(q.status)
    sql += " ORDER BY priority, created_at, id"
    if q.limit is not None:
        sql += " LIMIT ?"
        args.append(q.limit)
    items = [Item.from_dict(orjson.loads(body)) for (body,) in db.execute(sql, args)]
    total = len(items) if not q.count else counts.get(q.status, 0) if q.status is not None else sum(counts.values())
    others = {s: n for s, n in counts.items() if q.status is not None and s != q.status}
    return Result(items, total, others)


def prebuild(view: TreeView) -> None:
    """Build the index of a validated state right after a join's fetch and validation, while the records are in
    memory, so the first browse is a warm one (the join's own commit changes only rigs/, which it does not
    hold). Checks board.json as a join must. The entries it skips are reported by the commands that list items."""
    view.meta()
    log, quiet = logging.getLogger("wl.board"), _ThisThread()
    log.addFilter(quiet)
    try:
        view.query(Query(limit=0))
    finally:
        log.removeFilter(quiet)


class _ThisThread(logging.Filter):
    """Drops the records this thread logs (other threads' warnings, and later ones, still go out)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


def _preload(view: TreeView, top: str, changed: list[str], buckets: dict[str, bytes]) -> None:
    """Read the records of many changed buckets in one pass over the pack rather than one lookup each (a cold
    index build reads every record); what cannot be listed here is left to the reader, which reports it."""
    shas: list[bytes] = []
    for bucket in changed:
        name = bucket[len(top) + 1:]
        if name == FLAT:
            continue
        try:
            shas.extend(e.sha for e in view.store.tree(buckets[name]).iteritems())
        except Exception:  # noqa: BLE001, S112 - a bucket that is no readable tree: bucket_rows reports it
            continue
    view.store.preload(shas)


def _like(top: str) -> str:
    """A LIKE pattern for the bucket names under `top` (its own characters escaped)."""
    return top.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "/%"
