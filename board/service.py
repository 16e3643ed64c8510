"""The board as a service: queries, mutations (compare-and-swap on the remote), and sync by replay.

Every mutation is one commit carrying its operation. Online, it is built on the freshly fetched remote head
and pushed only if the remote has not moved; otherwise fetch, re-check, retry (bounded, jittered). Offline or
with --no-push it stays on the local branch, and `sync` later replays the recorded operations onto the fresh
remote state, reporting (and keeping) any whose precondition no longer holds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from board import layout, ops
from board.errors import (
    AlreadyApplied,
    BoardError,
    Contention,
    NotInitialised,
    RemoteError,
    Unreachable,
    UsageError,
)
from board.home import Home
from board.ids import check_handle, fmt_time, new_board_id, utcnow
from board.ops import Op
from board.records import Item, board_meta, dumps
from board.store import MAIN, ORIGIN_MAIN, NewObjects, Store
from board.view import TreeView

# A busy peer can land a commit every few tens of milliseconds; 30 jittered attempts (about 8 s of backoff at
# most) let a loser through where 12 (about 2 s) gave up while one fast worker kept the board moving.
MAX_ATTEMPTS = 30


@dataclass
class MutationResult:
    op: Op
    result: dict[str, Any]
    commit: str
    pushed: bool
    local_reason: str | None = None
    attempts: int = 1
    sync: SyncReport | None = None


@dataclass
class Kept:
    op: Op
    commit: str
    reason: str
    path: str


@dataclass
class SyncReport:
    """What a sync did, as values: replayed, already applied, and conflicted (with where it was kept)."""

    replayed: list[Op] = field(default_factory=list)
    already: list[Op] = field(default_factory=list)
    conflicted: list[Kept] = field(default_factory=list)
    pushed: bool = False
    head: str = ""
    attempts: int = 0


def _backoff(attempt: int) -> None:
    """Full jitter, capped: concurrent losers spread out instead of colliding again."""
    time.sleep(random.uniform(0, min(0.5, 0.01 * (2**attempt))))


class Board:
    def __init__(self, home: Home) -> None:
        if not home.exists():
            raise NotInitialised(str(home.path))
        self.home = home
        self.config = home.load_config()
        self.store = Store(home.repo_path)
        self.handle: str | None = self.config.get("handle")
        url = self.config.get("remote")
        self._remote_url: str | None = url or None
        self._remote: Any = None
        self.retries = 0  # CAS retries spent, for contention figures

    @property
    def remote(self) -> Any:
        """The Remote (imported on first use: read-only commands never load the network client)."""
        if self._remote is None and self._remote_url:
            from board.remote import Remote

            self._remote = Remote(self._remote_url)
        return self._remote

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------------
    def head(self) -> bytes:
        sha = self.store.ref(MAIN)
        if sha is None:
            raise NotInitialised(str(self.home.path))
        return sha

    def view(self) -> TreeView:
        return TreeView(self.store, self.store.tree_id(self.head()), self.home.cache_dir / "items.json")

    def meta(self) -> dict[str, Any]:
        return self.view().meta()

    def require_handle(self) -> str:
        if not self.handle:
            raise UsageError("no handle configured (run wl init --handle H or wl join URL --handle H)")
        return self.handle

    def get_item(self, prefix: str) -> Item:
        view = self.view()
        item = view.item(view.resolve(prefix))
        assert item is not None
        return item

    def pending(self) -> list[tuple[bytes, Op]]:
        """Local operations the remote has not seen yet, oldest first."""
        main = self.store.ref(MAIN)
        origin = self.store.ref(ORIGIN_MAIN)
        if main is None or self.remote is None or main == origin:
            return []
        base = None
        if origin is not None:
            from dulwich.graph import find_merge_base

            bases = find_merge_base(self.store.repo, [main, origin])  # type: ignore[list-item]
            base = bases[0] if bases else None
        out = []
        for sha in self.store.first_parent_chain(main, base):
            op = ops.op_from_message(self.store.commit(sha).message.decode("utf-8", "replace"))
            if op is not None:
                out.append((sha, op))
        return out

    # --- remote -----------------------------------------------------------------------------------
    def _fetch(self) -> bytes | None:
        assert self.remote is not None
        origin = self.remote.fetch(self.store)
        if origin is not None:
            self.store.force_ref(ORIGIN_MAIN, origin)
            main = self.store.ref(MAIN)
            if main is None or self.store.is_ancestor(main, origin):
                self.store.force_ref(MAIN, origin)
        return origin

    def refresh(self) -> bytes | None:
        """Fetch the remote (never re-clone); the local branch follows when it has nothing pending."""
        if self.remote is None:
            return self.store.ref(MAIN)
        with self.home.lock():
            head = self._fetch()
            self.store.maintain()
            return head

    # --- mutating ---------------------------------------------------------------------------------
    def new_op(self, name: str, item_id: str | None = None, **args: Any) -> Op:
        return Op(op=name, by=self.require_handle(), at=fmt_time(utcnow()), id=item_id, args=args)

    def mutate(
        self,
        op: Op,
        attachments: dict[str, bytes] | None = None,
        push: bool = True,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> MutationResult:
        attachments = attachments or {}
        op.attachments = sorted(attachments)
        with self.home.lock():
            if self.remote is None or not push:
                reason = "--no-push" if self.remote is not None else "this board has no remote"
                return self._commit_local(op, attachments, reason)
            try:
                origin = self._fetch()
            except Unreachable as e:
                return self._commit_local(op, attachments, f"remote unreachable ({e.reason})")
            report = None
            if self.pending():
                try:
                    report = self._replay(origin, max_attempts)
                except Unreachable as e:  # fetch worked, pushing the pending work did not: all of it waits
                    return self._commit_local(op, attachments, f"push failed ({e.reason})")
                origin = self.store.ref(ORIGIN_MAIN)
            for attempt in range(1, max_attempts + 1):
                new = NewObjects()
                base = origin
                view = TreeView(self.store, self.store.tree_id(base)) if base else None
                if view is None:
                    raise RemoteError(self.remote.url, "the remote has no board")
                applied = ops.apply(view, op, utcnow())
                commit = self.store.make_commit(
                    base, {**applied.changes, **attachments}, op.message(), op.by, new
                )
                from board.remote import Rejected

                try:
                    self.remote.push(self.store, commit, base, new)
                except Rejected:
                    self.retries += 1
                    _backoff(attempt)
                    origin = self._fetch()
                    continue
                except Unreachable as e:
                    self.store.force_ref(MAIN, commit)
                    return MutationResult(
                        op, applied.result, commit.decode(), False, f"push failed ({e.reason})", attempt, report
                    )
                self.store.force_ref(ORIGIN_MAIN, commit)
                self.store.force_ref(MAIN, commit)
                return MutationResult(op, applied.result, commit.decode(), True, None, attempt, report)
            raise Contention(self.remote.url, max_attempts)

    def _commit_local(self, op: Op, attachments: dict[str, bytes], reason: str) -> MutationResult:
        base = self.head()
        applied = ops.apply(TreeView(self.store, self.store.tree_id(base)), op, utcnow())
        new = NewObjects()
        commit = self.store.make_commit(base, {**applied.changes, **attachments}, op.message(), op.by, new)
        if not self.store.set_ref(MAIN, commit, base):
            raise BoardError("the local board changed during the command; run it again")
        return MutationResult(op, applied.result, commit.decode(), False, reason)

    def sync(self, max_attempts: int = MAX_ATTEMPTS) -> SyncReport:
        if self.remote is None:
            raise UsageError("this board has no remote to sync with")
        with self.home.lock():
            origin = self._fetch()
            report = self._replay(origin, max_attempts)
            self.store.maintain()
            return report

    def _replay(self, origin: bytes | None, max_attempts: int) -> SyncReport:
        assert self.remote is not None
        pending = self.pending()
        report = SyncReport(head=(origin or b"").decode())
        if not pending:
            if origin is not None:
                self.store.force_ref(MAIN, origin)
            return report
        if origin is None:
            raise RemoteError(self.remote.url, "the remote has no board")
        for attempt in range(1, max_attempts + 1):
            report = SyncReport(attempts=attempt)
            new = NewObjects()
            head = origin
            conflicts: list[tuple[bytes, Op, str]] = []
            for sha, op in pending:
                view = TreeView(self.store, self.store.tree_id(head))
                try:
                    applied = ops.apply(view, op, utcnow())
                except AlreadyApplied:
                    report.already.append(op)
                    continue
                except BoardError as e:
                    conflicts.append((sha, op, str(e)))
                    continue
                carried = self._attachments(sha, op)
                head = self.store.make_commit(head, {**applied.changes, **carried}, op.message(), op.by, new)
                report.replayed.append(op)
            if head != origin:
                from board.remote import Rejected

                try:
                    self.remote.push(self.store, head, origin, new)
                except Rejected:
                    self.retries += 1
                    _backoff(attempt)
                    origin = self._fetch()
                    assert origin is not None
                    continue
                report.pushed = True
            report.conflicted = [self._keep(sha, op, reason) for sha, op, reason in conflicts]
            self.store.force_ref(ORIGIN_MAIN, head)
            self.store.force_ref(MAIN, head)
            report.head = head.decode()
            return report
        raise Contention(self.remote.url, max_attempts)

    def _attachments(self, sha: bytes, op: Op) -> dict[str, bytes]:
        tree = self.store.tree_id(sha)
        out = {}
        for path in op.attachments:
            data = self.store.read(tree, path)
            if data is not None:
                out[path] = data
        return out

    def _keep(self, sha: bytes, op: Op, reason: str) -> Kept:
        """A refused replay loses nothing: the commit stays referenced and its data is written out."""
        self.store.force_ref(b"refs/wl/kept/" + sha, sha)
        self.home.kept_dir.mkdir(parents=True, exist_ok=True)
        path = self.home.kept_dir / f"{sha.decode()[:12]}-{op.op}.json"
        carried = {p: d.decode("utf-8", "replace") for p, d in self._attachments(sha, op).items()}
        record = {"op": op.to_dict(), "commit": sha.decode(), "reason": reason, "attachments": carried}
        path.write_bytes(dumps(record))
        return Kept(op, sha.decode(), reason, str(path))


# --- creating and joining boards --------------------------------------------------------------------
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


def _register(home: Home, handle: str, display_name: str | None) -> tuple[Board, MutationResult | None]:
    from board.keys import ensure_key

    address = ensure_key(home.path)
    board = Board(home)
    op = board.new_op("join", None, address=address, display_name=display_name or handle)
    try:
        return board, board.mutate(op)
    except AlreadyApplied:
        return board, None
    except BaseException:
        board.close()
        raise


def init_local(home: Home, handle: str, name: str | None = None) -> Board:
    """A local-only board in the home (no remote)."""
    check_handle(handle)
    if home.exists():
        raise UsageError(f"{home.path} already holds a board")
    home.ensure()
    store = Store.init_bare(home.repo_path)
    try:
        _initial_commit(store, name or f"{handle}-local", utcnow())
    finally:
        store.close()
    home.save_config({**home.load_config(), "handle": handle})
    board, _ = _register(home, handle, None)
    return board


def join(home: Home, url: str, handle: str, display_name: str | None = None) -> tuple[Board, MutationResult | None]:
    """Clone the commons into the home and register this rig (compare-and-swap, like every mutation)."""
    check_handle(handle)
    config = home.load_config()
    fresh = not home.exists()
    if not fresh:
        if config.get("remote") != url or config.get("handle") != handle:
            raise UsageError(f"{home.path} already holds a board (remote {config.get('remote')})")
    else:
        from board.remote import Remote

        remote = Remote(url)
        home.ensure()
        store = Store.init_bare(home.repo_path)
        try:
            head = remote.fetch(store)
            if head is None:
                raise RemoteError(url, "the remote has no board (create one with wl create PATH)")
            TreeView(store, store.tree_id(head)).meta()
            store.force_ref(ORIGIN_MAIN, head)
            store.force_ref(MAIN, head)
        except BoardError:
            store.close()
            import shutil

            shutil.rmtree(home.repo_path, ignore_errors=True)
            raise
        store.close()
    home.save_config({**config, "handle": handle, "remote": url})
    try:
        return _register(home, handle, display_name)
    except BoardError:
        if fresh:  # a refused join (the handle is someone else's) must not leave the home acting as that handle
            home.save_config(config)
            import shutil

            shutil.rmtree(home.repo_path, ignore_errors=True)
        raise
