"""The board as a service: queries, mutations (compare-and-swap on the remote), and sync by replay.

Every mutation is one commit carrying its operation, signed by this rig (board/publish.py). Every fetch is
validated (board/ledger.py) and every read uses the validated state. Online, a mutation is built on the
freshly fetched, validated remote head and pushed only if the remote has not moved; otherwise fetch, re-check,
retry (bounded, jittered). Before it, the same push heals the commons: a repair over invalid commits, and
the republication of operations a history rewrite dropped. Offline or with --no-push it stays on the local
branch, and `sync` later replays this rig's own recorded operations onto the fresh remote state, reporting
(and keeping) any whose precondition no longer holds.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from collections.abc import Iterator
from typing import Any

from board import ops, parsecache
from board.bulk import paused_gc
from board.commons import _initial_commit
from board.commons import create_commons as create_commons  # re-exported: callers create boards here
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
from board.ids import check_handle, fmt_time, utcnow
from board.keys import load_private_key
from board.ledger import Advance, Ledger, State
from board.ops import Op
from board.publish import Chain
from board.records import Item, dumps
from board.results import Kept, MutationResult, SyncReport
from board.store import MAIN, ORIGIN_MAIN, Store
from board.view import TreeView

LOCAL_BASE = b"refs/wl/local-base"  # the validated commit this rig's unpushed commits are built on

# A busy peer can land a commit every few tens of milliseconds; 30 jittered attempts (about 8 s of backoff at
# most) let a loser through where 12 (about 2 s) gave up while one fast worker kept the board moving.
MAX_ATTEMPTS = 30


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
        self.ledger = Ledger(self.store, home.cache_dir / "ledger.json")
        self.handle: str | None = self.config.get("handle")
        url = self.config.get("remote")
        self._remote_url: str | None = url or None
        self._remote: Any = None
        self.retries = 0  # CAS retries spent, for contention figures
        self.found = SyncReport()  # what validation found during this Board's fetches (reported by sync)
        self._held = False
        self._lane_cache: Any = None  # (key, lanes) of board/claims.live_lanes
        self._lane_warned: set[tuple[str, bytes]] = set()
        self._lane_folds: dict[Any, Any] = {}  # board/claims.live_lanes' per-lane memo
        self.fetched_at: float | None = None  # time.monotonic() of the last fetch that answered
        self.courtesy: Any = None  # a long-running worker's fold manners (board/folding.Courtesy)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The home's lock, taken once per call chain (flock does not nest within one process)."""
        if self._held:
            yield
            return
        with self.home.lock():
            self._held = True
            try:
                yield
            finally:
                self._held = False

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

    def state(self) -> State:
        """The validated state (validating what this clone holds when nothing is cached yet)."""
        state = self.ledger.load()
        if state is None:
            with self._lock():
                tip = self.store.ref(ORIGIN_MAIN) if self.remote is not None else self.head()
                state, found = self.ledger.advance(tip or self.head())
                self._note(found)
        return state

    def view(self) -> TreeView:
        """The validated state, plus this rig's own unpushed operations, with the claims that live on lanes
        laid over it; never a tree that failed validation."""
        main, state = self.head(), self.state()
        tree = state.tree.encode() if main.decode() == state.commit else self.store.tree_id(main)
        from board.claims import overlaid

        return overlaid(self, TreeView(self.store, tree, self.home.cache_dir / "items.json"), state)

    def lanes(self) -> dict[str, Any]:
        """The live claim lanes: item id → board.lanes.Lane."""
        from board.claims import live_lanes

        return live_lanes(self)

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
        """This rig's own local operations the remote has not seen yet, oldest first.

        Only commits this rig made on top of the validated state count: another rig's operations that a
        history rewrite dropped are republished under their author's signature, never replayed as ours.
        """
        main = self.store.ref(MAIN)
        if main is None or self.remote is None:
            return []
        base = self.store.ref(LOCAL_BASE)
        if base is None or main.decode() == self.state().commit:
            return []
        out = []
        for sha in self.store.first_parent_chain(main, base):
            op = ops.op_from_message(self.store.commit(sha).message.decode("utf-8", "replace"))
            if op is not None and op.by == self.handle and op.op not in ops.LEDGER_OPS:
                out.append((sha, op))
        return out

    # --- remote -----------------------------------------------------------------------------------
    def _note(self, found: Advance) -> None:
        self.found.invalid.extend(found.bad)
        self.found.vanished.extend(found.vanished)

    def _fetch(self) -> bytes | None:
        """Fetch, then validate what arrived; the local branch follows when it holds nothing of ours."""
        assert self.remote is not None
        before = self.ledger.load()
        previous = {self.store.ref(ORIGIN_MAIN), before.commit.encode() if before else None}
        origin: bytes | None = self.remote.fetch(self.store)
        self.fetched_at = time.monotonic()
        if origin is None:
            return None
        self.store.force_ref(ORIGIN_MAIN, origin)
        state, found = self.ledger.advance(origin)
        if self.courtesy is not None:  # fold manners (board/folding.Courtesy): did someone else move main, when?
            self.courtesy.fetched(origin not in previous, state.at, len(found.checked))
        self._note(found)
        from board.claims import track

        track(self, self.remote.lanes)
        self._lane_cache = None
        main = self.store.ref(MAIN)
        if main is None or main in previous or main in found.checked:
            self.store.force_ref(MAIN, origin)
            self.store.remove_ref(LOCAL_BASE)
        return origin

    def refresh(self) -> bytes | None:
        """Fetch the remote (never re-clone) and validate it; the local branch follows when nothing is pending."""
        if self.remote is None:
            return self.store.ref(MAIN)
        with self._lock():
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
        with self._lock():
            if self.remote is None or not push:
                reason = "--no-push" if self.remote is not None else "this board has no remote"
                return self._commit_local(op, attachments, reason)
            try:
                origin = self._fetch()
            except Unreachable as e:
                return self._commit_local(op, attachments, f"remote unreachable ({e.reason})")
            if origin is None:
                raise RemoteError(self.remote.url, "the remote has no board")
            from board import claims

            if claims.on_lane(self, op):
                try:
                    return claims.mutate(self, op, origin, max_attempts, attachments)
                except Unreachable as e:
                    return self._commit_local(op, attachments, f"push failed ({e.reason})")
            claims.carry_proof(self, op)
            claims.precheck(self, op)
            try:
                report, applied, head = self._publish(origin, max_attempts, op, attachments)
            except Unreachable as e:
                return self._commit_local(op, attachments, f"push failed ({e.reason})")
            assert applied is not None
            if op.op == "done" and op.id and "lane" in op.args:
                claims.spend(self, [op.id])
            sync = report if report.eventful() else None
            return MutationResult(op, applied.result, head.decode(), True, None, report.attempts, sync)

    def claim_many(self, item_ids: list[str], lease_seconds: int = ops.DEFAULT_LEASE) -> dict[str, Any]:
        """Claim several items in one push (on their lanes); per item its MutationResult or the BoardError
        that refused it. Offline, or on a board whose state is quarantined, they are claimed one by one."""
        from board.claims import claim_many

        with self._lock():
            return claim_many(self, item_ids, lease_seconds)

    def _commit_local(self, op: Op, attachments: dict[str, bytes], reason: str) -> MutationResult:
        from board import claims

        claims.refuse_offline(self, op, reason)
        claims.carry_proof(self, op)
        claims.precheck(self, op)
        base, state, view = self.head(), self.state(), self.view()
        chain = Chain.on(self.store, state, self._keys(), base, view.tree)
        if base.decode() != state.commit:
            tip = ops.op_from_message(self.store.commit(base).message.decode("utf-8", "replace"))
            chain.at = max(chain.at, tip.at if tip else "")
        applied = chain.add(op, attachments)
        assert chain.head is not None
        if not self.store.set_ref(MAIN, chain.head, base):
            raise BoardError("the local board changed during the command; run it again")
        if self.remote is None:
            self.ledger.advance(chain.head)
        elif self.store.ref(LOCAL_BASE) is None:
            self.store.force_ref(LOCAL_BASE, state.commit.encode())
        return MutationResult(op, applied.result, chain.head.decode(), False, reason)

    def sync(self, max_attempts: int = MAX_ATTEMPTS) -> SyncReport:
        if self.remote is None:
            raise UsageError("this board has no remote to sync with")
        with self._lock():
            origin = self._fetch()
            if origin is None:
                raise RemoteError(self.remote.url, "the remote has no board")
            report, _, _ = self._publish(origin, max_attempts)
            from board.claims import flush_spent, prune, spend

            done = [o.id for o in report.replayed if o.op == "done" and o.id and "lane" in o.args]
            if report.pushed and done:
                spend(self, done)
            flush_spent(self)
            prune(self)
            self.store.maintain()
            return report

    def _publish(
        self, origin: bytes, max_attempts: int, op: Op | None = None, attachments: dict[str, bytes] | None = None
    ) -> tuple[SyncReport, ops.Applied | None, bytes]:
        """Heal the commons (checkpoint, repair, republish), replay our pending work, apply `op`, push it all
        as one compare-and-swap; on a lost race fetch, re-validate and rebuild."""
        assert self.remote is not None
        from board.remote import Rejected

        keys = self._keys()
        me = self.require_handle()
        from board.folding import add_fold, landed, lift

        pending, on_lanes = lift(self, self.pending())  # a worker's batch of results onto their lanes, one push
        for attempt in range(1, max_attempts + 1):
            origin = self.store.ref(ORIGIN_MAIN) or origin  # a fold of our batch may have landed first (lift)
            state = self.ledger.load()
            assert state is not None
            report = SyncReport(attempts=attempt, head=origin.decode(), invalid=list(self.found.invalid),
                                vanished=list(self.found.vanished))
            report.invalid += [b for b in state.excluded if b not in report.invalid]
            chain = Chain.on(self.store, state, keys, origin)
            kept: list[tuple[bytes, Op, str]] = []  # our own dropped operations that no longer apply
            if not state.legacy and not self.ledger.healthy(state):
                chain.repair(me, [b.commit for b in state.excluded])
                report.repaired = True
            for dropped in state.dropped:
                try:
                    report.republished.append(chain.republish(me, dropped, state))
                except AlreadyApplied:
                    continue
                except BoardError as e:
                    report.unrepublished.append((dropped.op(), str(e)))
                    if dropped.op().by == me and self.store.has(dropped.commit.encode()):
                        kept.append((dropped.commit.encode(), dropped.op(), str(e)))
            folded = add_fold(self, chain, state)  # lane results first: they were submitted before anything here
            report.replayed.extend(on_lanes)
            conflicts: list[tuple[bytes, Op, str]] = []
            for sha, own in pending:
                try:
                    if own.id is not None and own.id in self.lanes():  # a claim held on a lane holds
                        from board.claims import overlaid

                        ops.apply(overlaid(self, chain.view(), state), own, utcnow())
                    chain.add(own, self._attachments(sha, own))
                    report.replayed.append(own)
                except AlreadyApplied:
                    report.already.append(own)
                except BoardError as e:
                    conflicts.append((sha, own, str(e)))
            applied, refused = None, None
            if op is not None:
                try:
                    applied = chain.add(op, attachments)
                except BoardError as e:
                    refused = e
            if state.legacy:
                chain.checkpoint(me)
                report.checkpointed = True
            head = chain.head or origin
            if head != origin:
                checked = self._self_check(state, chain.commits)
                try:
                    self.remote.push(self.store, head, origin, chain.new)
                except Rejected as e:
                    self.retries += 1
                    _backoff(attempt)
                    moved = self._fetch() or origin
                    if moved == origin and "hook declined" in str(e):  # a validating server said no
                        raise RemoteError(self.remote.url, f"the remote refused the push ({e})") from None
                    origin = moved
                    continue
                report.pushed = True
                self.store.force_ref(ORIGIN_MAIN, head)
                self.ledger.save(checked)
                report.folded = landed(self, folded)
            elif state.dropped or state.vanished:  # every dropped operation was already back, or refused
                state.dropped, state.vanished = [], []
                self.ledger.save(state)
            self.store.force_ref(MAIN, head)
            self.store.remove_ref(LOCAL_BASE)
            report.conflicted = [self._keep(sha, o, reason) for sha, o, reason in conflicts + kept]
            report.head = head.decode()
            self.found = SyncReport()
            if refused is not None:
                raise refused
            return report, applied, head
        raise Contention(self.remote.url, max_attempts)

    def _keys(self) -> list[bytes]:
        """The home's key, then a pending rotation's: after the board has published a rotation, this rig
        signs with the key the board registers even before the home switches to it."""
        from board.keys import load_next_key

        keys = [load_private_key(self.home.path)]
        pending = load_next_key(self.home.path)
        if pending is not None:
            keys.append(pending)
        return keys

    def _self_check(self, state: State, new: list[bytes]) -> State:
        """Validate our own commits exactly as every other rig will, before anyone can see them."""
        trial = State.from_json(state.to_json())
        found = Advance()
        for sha in new:
            self.ledger.step(trial, sha, found)
        if found.bad:
            raise BoardError(f"refusing to publish an invalid commit: {found.bad[0].reason}")
        trial.dropped, trial.vanished = [], []
        return trial

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
            from board.index import prebuild  # lazily: sqlite is for browse and join only

            with paused_gc(), parsecache.collecting():  # the index is built while the records are in memory
                state, _ = Ledger(store, home.cache_dir / "ledger.json").advance(head)
                prebuild(TreeView(store, state.tree.encode(), home.cache_dir / "items.json"))
            store.force_ref(ORIGIN_MAIN, head)
            store.force_ref(MAIN, head)
        except BoardError:
            store.close()
            shutil.rmtree(home.repo_path, ignore_errors=True)
            raise
        store.close()
    home.save_config({**config, "handle": handle, "remote": url})
    try:
        return _register(home, handle, display_name)
    except BoardError:
        if fresh:  # a refused join (the handle is someone else's) must not leave the home acting as that handle
            home.save_config(config)
            shutil.rmtree(home.repo_path, ignore_errors=True)
        raise
