"""What `wl infer worker` and `wl infer feed` share: signal handling, choosing runnable items, polling the
board and claiming by compare-and-swap. Progress is reported through a plain `Log` callback (the commands
pass an event log that prints JSON lines or a live panel: wl_infer/commands/events.py).
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from board.api import BoardError, Contention, NotFound, RemoteError, RuleError, UsageError
from wl_infer.errors import CodecError

if TYPE_CHECKING:
    from board.api import Board, Item
    from wl_infer.codec import Job

MAX_LEASE_S = 30 * 86400
SHUFFLE_WINDOW = 32  # concurrent workers spread over the oldest items instead of all racing for the same few
TICK_S = 0.2  # how often a waiting main thread looks at signals, runs and the panel


class Log(Protocol):
    """Where a loop reports what happened: an event name and its data (values JSON can carry)."""

    def __call__(self, event: str, /, **data: Any) -> None: ...


# --- signals -----------------------------------------------------------------------------------------------
class StopSignals:
    """First SIGINT/SIGTERM asks the loop to stop cleanly; a second one exits the process at once."""

    def __init__(self, what_is_left: Callable[[], str]) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._what_is_left = what_is_left
        self._previous: dict[int, Any] = {}

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            left = self._what_is_left()
            os.write(2, f"wl: second signal: exiting now{'; ' + left if left else ''}\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

# --- choosing work -------------------------------------------------------------------------------------------
def runnable_items(items: list[Item], now: datetime, exclude: set[str]) -> Iterator[Item]:
    """Open (or lease-expired) inference items, highest priority and oldest first, shuffled at the head.

    The shuffled head is SHUFFLE_WINDOW items, or twice the claims held now where more are: two workers lose a
    race only when they pick the same item, which grows with the workers claiming at once (the claims held say
    how many there are) over the window they pick from, so a commons with a thousand workers does not have
    them all racing for the same 32 items."""
    from board.api import lease_expired

    held = sum(1 for i in items if i.status == "claimed" and not lease_expired(i, now))
    window = max(SHUFFLE_WINDOW, 2 * held)
    pool = [
        i for i in items
        if i.type == "inference" and i.id not in exclude
        and (i.status == "open" or (i.status == "claimed" and lease_expired(i, now)))
    ]  # fmt: skip
    pool.sort(key=lambda i: (i.priority, i.created_at, i.id))
    if not pool:
        return
    best = pool[0].priority
    head = [i for i in pool[:window] if i.priority == best]
    random.shuffle(head)
    yield from head
    yield from pool[len(head) :]


def decode_job(item: Item) -> Job:
    """The item's job (CodecError when its description is not one: another participant's bad entry)."""
    from wl_infer.codec import Job

    return Job.decode(item.description)


@dataclass
class Filters:
    backend: str | None = None
    model: str | None = None
    min_bounty: int | None = None  # wei: only items whose recorded bounty is at least this

    def admit(self, job: Job) -> bool:
        return (self.backend is None or job.backend == self.backend) and (self.model is None or job.model == self.model)

    def pays_enough(self, item: Item) -> bool:
        """With a minimum bounty, only items carrying a well-formed bounty record of at least that much."""
        if self.min_bounty is None:
            return True
        from wl_infer.bounty_board import BadBounty, bounty_of

        try:
            rec = bounty_of(item)
        except BadBounty:
            return False
        return rec is not None and rec.amount >= self.min_bounty

class PaidWork:
    """`wl infer worker --min-bounty`: a bounty job runs only once its poster has named this rig on chain, and
    its hashes are staked and submitted on chain before the board sees the output (`commit`).

    A claimed bounty job that is not assigned yet is held, not run (`admit` says so once); each poll looks at
    this rig's held claims on the board (`ready`), so a later worker process picks them up as well."""

    def __init__(self, board: Board, me: str, log: Log, filters: Filters) -> None:
        self.board, self.me, self.log, self.filters = board, me, log, filters
        self.noted: set[str] = set()

    def _assigned(self, item: Item) -> bool | None:
        """True/False from the chain; None (logged once) when the record or the chain cannot say."""
        from wl_infer.bounty_board import assigned_here, bounty_of

        try:
            if bounty_of(item) is None:
                return True
            return assigned_here(self.board, item)
        except BoardError as e:
            if item.id not in self.noted:
                self.noted.add(item.id)
                self.log("bounty_unreadable", id=item.id, error=str(e))
            return None

    def ready(self, items: list[Item], exclude: set[str]) -> Iterator[tuple[Item, Job]]:
        """This rig's held bounty claims (that pass the filters) whose bounty is now assigned to it, with jobs."""
        from wl_infer.bounty_board import BadBounty, bounty_of

        for item in items:
            if item.status != "claimed" or item.claimed_by != self.me or item.id in exclude:
                continue
            try:
                if bounty_of(item) is None:
                    continue
                job = decode_job(item)
            except (BadBounty, CodecError):
                continue
            if not self.filters.admit(job) or not self.filters.pays_enough(item):
                continue  # a claim this worker would not have taken (the rig's own `wl claim`): left alone
            if self._assigned(item):
                self.log("assigned", id=item.id)
                yield item, job

    def admit(self, item: Item) -> bool:
        """After the claim: run now (no bounty, or already assigned here), or hold the claim for the poster."""
        if self._assigned(item):
            return True
        self.log("awaiting_assignment", id=item.id, note=f"the poster names this rig with `wl chain assign {item.id}`")
        return False

    def commit(self, item_id: str, evidence: Any) -> None:
        from wl_infer.bounty_board import commit_before_reveal

        sub = commit_before_reveal(self.board, item_id, evidence)
        if sub is not None:
            self.log("bounty_submitted", id=item_id, tx=sub.get("tx"), stake=str(sub.get("stake")),
                     already=bool(sub.get("already_submitted")))


class Poller:
    """Fetches the board once per poll, reports going offline and back once each, and publishes local commits
    an earlier push could not deliver (a completion must never stay on this machine only)."""

    def __init__(self, board: Board, log: Log) -> None:
        self.board, self.log, self.offline = board, log, False

    def __call__(self) -> bool:
        from board.api import own_results

        try:
            self.board.refresh()
            if self.board.remote is not None and (self.board.pending() or own_results(self.board)):
                report = self.board.sync()  # also folds our results still only on their lanes (board/folds.py)
                self.log("synced", replayed=[f"{op.op} {op.id}" for op in report.replayed], folded=report.folded,
                         conflicted=[{"op": f"{k.op.op} {k.op.id}", "reason": k.reason, "kept": k.path}
                                     for k in report.conflicted])  # fmt: skip
        except RemoteError as e:  # unreachable, or a server having a bad moment: wait and poll again
            if not self.offline:
                self.log("offline", reason=e.reason)
            self.offline = True
            return False
        except BoardError as e:
            self.log("sync_failed", error=str(e))
        if self.offline:
            self.log("online")
        self.offline = False
        return True


def claim_item(board: Board, item_id: str, lease_s: int, push: bool, log: Log) -> tuple[Any, int]:
    """Claim by compare-and-swap; (None, retries) when another rig got there first (the caller moves on)."""
    before = board.retries
    try:
        res = board.mutate(board.new_op("claim", item_id, lease_seconds=lease_s), push=push)
    except (RuleError, NotFound, Contention) as e:
        retries = board.retries - before
        log("lost_race", id=item_id, reason=str(e), retries=retries)
        return None, retries
    retries = board.retries - before
    log("claimed", id=item_id, lease_seconds=lease_s, retries=retries, attempts=res.attempts,
        took_over_from=res.result.get("took_over_from"), pushed=res.pushed)  # fmt: skip
    if not res.pushed:
        log("offline", reason=res.local_reason, note="the claim is local until the remote is back")
    return res, retries


def claim_batch(board: Board, item_ids: list[str], lease_s: int, log: Log) -> set[str]:
    """Claim several items in one push (board.claim_many: each on its own lane); the ids this rig now holds."""
    before = board.retries
    try:
        results = board.claim_many(item_ids, lease_s)
    except (RemoteError, BoardError) as e:
        for item_id in item_ids:
            log("lost_race", id=item_id, reason=str(e), retries=board.retries - before)
        return set()
    won = set()
    for item_id, res in results.items():
        if isinstance(res, BaseException):
            log("lost_race", id=item_id, reason=str(res), retries=board.retries - before)
            continue
        won.add(item_id)
        log("claimed", id=item_id, lease_seconds=lease_s, retries=board.retries - before, attempts=res.attempts,
            took_over_from=res.result.get("took_over_from"), pushed=res.pushed, batch=len(item_ids))  # fmt: skip
    return won


# --- settings -------------------------------------------------------------------------------------------------
def resolve_lease(board: Board, minutes: int | None, seconds: int | None) -> int:
    """--lease-seconds (for tests) beats --lease minutes beats the config's lease (minutes) beats 30 minutes."""
    if seconds is not None:
        return seconds
    from board.api import claim_lease

    lease = claim_lease(board.config, minutes)
    if not 60 <= lease <= MAX_LEASE_S:
        raise UsageError("lease must be between 1 minute and 30 days")
    return lease

