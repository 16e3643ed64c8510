"""What `wl infer worker` and `wl infer feed` share: the event log (JSON lines for machines, a live panel
for people), signal handling, choosing runnable items, polling the board and claiming by compare-and-swap.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from board.errors import BoardError, Contention, NotFound, RemoteError, RuleError, UsageError

if TYPE_CHECKING:
    from board.records import Item
    from board.service import Board
    from wl_infer.codec import Job

BACKENDS = click.Choice(["ollama", "llama-cpp", "vllm", "openai"])
MAX_LEASE_S = 30 * 86400
SHUFFLE_WINDOW = 8  # concurrent workers spread over the oldest few items instead of all racing for one
TICK_S = 0.2  # how often a waiting main thread looks at signals, runs and the panel


# --- events: JSON lines for machines, a live panel for people ------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short(value: Any) -> str:
    """A value as the panel shows it: floats rounded, long text (hashes, errors) cut."""
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


class EventLog:
    """One JSON line per event (flushed) when stdout is not a terminal or under --json; else a rich Live panel."""

    def __init__(self, live: bool, title: str, status: Callable[[], list[tuple[str, str]]]) -> None:
        self.live = live
        self.title = title
        self.status = status
        self.recent: deque[str] = deque(maxlen=8)
        self._lock = threading.Lock()
        self._live: Any = None

    def __call__(self, event: str, **data: Any) -> None:
        record = {"event": event, "at": _stamp(), **data}
        with self._lock:
            if self.live:
                shown = " ".join(f"{k}={_short(v)}" for k, v in data.items() if v is not None)
                self.recent.append(f"{record['at'][11:19]} {event} {shown}")
            else:
                sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
                sys.stdout.flush()

    def render(self) -> Any:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, value in self.status():
            grid.add_row(label, Text(value))
        events = Text("\n".join(self.recent) or "(no events yet)", style="dim", no_wrap=True, overflow="ellipsis")
        body = Table.grid()
        body.add_row(grid)
        body.add_row(Text(""))
        body.add_row(events)
        return Panel(body, title=self.title, border_style="cyan")

    def __enter__(self) -> EventLog:
        if self.live:
            from rich.live import Live

            from board.cli.output import console

            self._live = Live(get_renderable=self.render, console=console(), refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


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
    """Open (or lease-expired) inference items, highest priority and oldest first, lightly shuffled at the head."""
    from board.ops import lease_expired

    pool = [
        i for i in items
        if i.type == "inference" and i.id not in exclude
        and (i.status == "open" or (i.status == "claimed" and lease_expired(i, now)))
    ]  # fmt: skip
    pool.sort(key=lambda i: (i.priority, i.created_at, i.id))
    if not pool:
        return
    best = pool[0].priority
    head = [i for i in pool[:SHUFFLE_WINDOW] if i.priority == best]
    random.shuffle(head)
    yield from head
    yield from pool[len(head) :]


def decode_job(item: Item) -> Job | str:
    """The item's job, or why it does not decode."""
    from wl_infer.codec import CodecError, Job

    try:
        return Job.decode(item.description)
    except CodecError as e:
        return str(e)


@dataclass
class Filters:
    backend: str | None = None
    model: str | None = None

    def admit(self, job: Job) -> bool:
        return (self.backend is None or job.backend == self.backend) and (self.model is None or job.model == self.model)

class Poller:
    """Fetches the board once per poll, reports going offline and back once each, and publishes local commits
    an earlier push could not deliver (a completion must never stay on this machine only)."""

    def __init__(self, board: Board, log: EventLog) -> None:
        self.board, self.log, self.offline = board, log, False

    def __call__(self) -> bool:
        try:
            self.board.refresh()
            if self.board.remote is not None and self.board.pending():
                report = self.board.sync()
                self.log("synced", replayed=[f"{op.op} {op.id}" for op in report.replayed],
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


def claim_item(board: Board, item_id: str, lease_s: int, push: bool, log: EventLog) -> tuple[Any, int]:
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

# --- settings -------------------------------------------------------------------------------------------------
def resolve_lease(board: Board, minutes: int | None, seconds: int | None) -> int:
    """--lease-seconds (for tests) beats --lease minutes beats the config's lease (minutes) beats 30 minutes."""
    if seconds is not None:
        return seconds
    value = minutes if minutes is not None else int(board.config.get("lease", 30))
    if not 1 <= value * 60 <= MAX_LEASE_S:
        raise UsageError("lease must be between 1 minute and 30 days")
    return value * 60


def wants_live() -> bool:
    from board.cli.output import is_json

    return not is_json() and sys.stdout.isatty()
