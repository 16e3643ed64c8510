"""`wl infer feed`: the feeder bot. Claims open inference items under this rig's handle and hands each to a
`wl infer run <id> --skip-claim` process (or a `--command` template), N at a time.

The feeder owns the claims: it renews them while runs are going, releases the claim of a run that failed
(unless the item already moved on), and on SIGINT/SIGTERM stops its runs and releases what they held. An item
is dispatched at most once per feeder process. Commands run from an argv list, never through a shell.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from board.api import BoardError, RuleError, UsageError
from wl_infer.automation import (
    TICK_S,
    Filters,
    Log,
    Poller,
    StopSignals,
    claim_batch,
    claim_item,
    decode_job,
    runnable_items,
)
from wl_infer.errors import CodecError
from wl_infer.limits import Limits, job_refusal

if TYPE_CHECKING:
    from board.api import Board

STOP_GRACE_S = 5.0  # how long stopped runs get to exit on SIGTERM before SIGKILL


def wl_argv() -> list[str]:
    """How to start this installation's `wl`: the script beside this Python, else on PATH, else via -c."""
    beside = Path(sys.executable).with_name("wl")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("wl")
    return [found] if found else [sys.executable, "-c", "from board.cli.main import main; main()"]


def parse_template(command: str | None) -> list[str]:
    """The argv template: `--command` split like a shell (never run by one), else `wl … infer run {id} --skip-claim`."""
    if command is None:
        return [*wl_argv(), "--home", "{home}", "--json", "infer", "run", "{id}", "--skip-claim"]
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise UsageError(f"--command: {e}") from None
    if not argv or not any("{id}" in a for a in argv):
        raise UsageError("--command must name the item as {id}, e.g. \"ssh gpu1 wl infer run {id} --skip-claim\"")
    return argv


def command_for(template: list[str], item_id: str, home: Path) -> list[str]:
    """Substitute a validated id (and the home) into each argument; the argument count never changes."""
    from board.api import check_item_id

    item_id = check_item_id(item_id)
    return [a.replace("{id}", item_id).replace("{home}", str(home)) for a in template]


@dataclass
class FeedOptions:
    template: list[str]
    slots: int = 1
    filters: Filters = field(default_factory=Filters)
    once: bool = False
    max_jobs: int | None = None
    poll_s: float = 5.0
    lease_s: int = 1800
    idle_exit_s: float | None = None
    push: bool = True
    limits: Limits = field(default_factory=Limits)


@dataclass
class Dispatch:
    item_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float
    renewed: float
    renewing: bool = True


@dataclass
class FeedStats:
    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    skipped: int = 0
    lost_races: int = 0
    claim_retries: int = 0


class Feeder:
    """One loop: reap finished runs, renew leases, top up free slots from the board, wait a tick."""

    def __init__(self, board: Board, opts: FeedOptions, log: Log, stop: StopSignals) -> None:
        self.board, self.opts, self.log, self.stop = board, opts, log, stop
        self.me = board.require_handle()
        self.home = board.home.path
        self.stats = FeedStats()
        self.running: dict[str, Dispatch] = {}
        self.seen: set[str] = set()  # dispatched or skipped: never dispatched (again) by this process
        self.poll = Poller(board, log)

    def status_rows(self) -> list[tuple[str, str]]:
        s, now = self.stats, time.monotonic()
        running = ", ".join(f"{d.item_id} ({now - d.started:.0f} s)" for d in self.running.values())
        return [
            ("Rig", self.me),
            ("Running", f"{len(self.running)}/{self.opts.slots}: {running or 'none'}"),
            ("Dispatched / done / failed", f"{s.dispatched} / {s.succeeded} / {s.failed}"),
            ("Released / skipped", f"{s.released} / {s.skipped}"),
            ("Lost races / CAS retries", f"{s.lost_races} / {s.claim_retries}"),
        ]

    def summary(self) -> dict[str, Any]:
        return dict(self.stats.__dict__)

    def _more_wanted(self) -> bool:
        return self.opts.max_jobs is None or self.stats.dispatched < self.opts.max_jobs

    def run(self) -> int:
        """Exit status: 0, or 1 when --once dispatched runs and one of them failed."""
        if self.board.view().rig(self.me) is None:
            from board.api import NotRegistered

            raise NotRegistered(self.me)
        self.log("started", rig=self.me, pid=os.getpid(), slots=self.opts.slots, command=self.opts.template,
                 lease_seconds=self.opts.lease_s, poll=self.opts.poll_s)  # fmt: skip
        last_poll = -float("inf")
        idle_since: float | None = None
        rounds = 0
        while True:
            self.reap()
            if self.stop.is_set():
                break
            self.renew_due()
            may_poll = self._more_wanted() and not (self.opts.once and rounds)
            if not self.running and not may_poll:
                break
            if len(self.running) < self.opts.slots and may_poll and time.monotonic() - last_poll >= self.opts.poll_s:
                last_poll = time.monotonic()
                rounds += 1
                found = self.fill() if self.poll() else 0
                if self.opts.once and not found and not self.running:
                    self.log("no_job")
                if not found and not self.running and idle_since is None:
                    idle_since = time.monotonic()
                    self.log("idle")
            if self.running:
                idle_since = None
            elif idle_since is not None and self.opts.idle_exit_s is not None:
                if time.monotonic() - idle_since >= self.opts.idle_exit_s:
                    self.log("idle_exit", idle_seconds=round(time.monotonic() - idle_since, 1))
                    break
            self.stop.wait(min(TICK_S, self.opts.poll_s))
        if self.stop.signum is not None:
            self.log("stopping", signal=signal.Signals(self.stop.signum).name, running=sorted(self.running))
            self.abandon_all()
        self.log("stopped", **self.summary())
        return 1 if self.opts.once and self.stats.failed else 0

    # dispatching
    def fill(self) -> int:
        """Claim and start runs until the slots are full (the free slots' items claimed in one push); returns
        how many were started."""
        from board.api import utcnow

        wanted: list[str] = []
        free = self.opts.slots - len(self.running)
        if self.opts.max_jobs is not None:
            free = min(free, self.opts.max_jobs - self.stats.dispatched)
        for item in runnable_items(self.board.view().items(), utcnow(), self.seen):
            if len(wanted) >= free or self.stop.is_set():
                break
            try:
                job = decode_job(item)
            except CodecError as e:
                self.seen.add(item.id)
                self.stats.skipped += 1
                self.log("skipped", id=item.id, reason=str(e))
                continue
            if not self.opts.filters.admit(job):
                continue
            refused = job_refusal(job, self.opts.limits)  # issue 10: what the job alone decides, before claiming
            if refused is not None:
                self.seen.add(item.id)
                self.stats.skipped += 1
                self.log("skipped", id=item.id, reason=refused)
                continue
            wanted.append(item.id)
        if not wanted:
            return 0
        if len(wanted) > 1 and self.opts.push:
            before = self.board.retries
            won = claim_batch(self.board, wanted, self.opts.lease_s, self.log)
            self.stats.claim_retries += self.board.retries - before
        else:
            won = set()
            for item_id in wanted:
                res, retries = claim_item(self.board, item_id, self.opts.lease_s, self.opts.push, self.log)
                self.stats.claim_retries += retries
                if res is not None:
                    won.add(item_id)
        started = 0
        for item_id in wanted:
            if item_id not in won:
                self.stats.lost_races += 1
                continue
            self.seen.add(item_id)
            self.stats.dispatched += 1
            if self.spawn(item_id):
                started += 1
        return started

    def spawn(self, item_id: str) -> bool:
        argv = command_for(self.opts.template, item_id, self.home)
        logs = self.home / "feed"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{item_id}.log"
        env = {**os.environ, "WL_HOME": str(self.home)}
        try:
            with open(log_path, "wb") as out:
                # its own session: a Ctrl-C at the terminal reaches the feeder, which decides what the runs do
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)  # fmt: skip
        except OSError as e:
            self.stats.failed += 1
            released = self._release(item_id)
            self.log("failed", id=item_id, error=f"cannot start {argv[0]}: {e.strerror or e}", released=released)
            return False
        now = time.monotonic()
        self.running[item_id] = Dispatch(item_id, proc, log_path, now, now)
        self.log("dispatched", id=item_id, pid=proc.pid, running=len(self.running), argv=argv)
        return True

    def reap(self) -> None:
        for item_id, d in list(self.running.items()):
            code = d.proc.poll()
            if code is None:
                continue
            del self.running[item_id]
            elapsed = round(time.monotonic() - d.started, 3)
            text = d.log_path.read_bytes() if d.log_path.exists() else b""
            if code == 0:
                self.stats.succeeded += 1
                self.log("done", id=item_id, elapsed_s=elapsed, output_hash=_output_hash(text), running=len(self.running))
                d.log_path.unlink(missing_ok=True)
                continue
            self.stats.failed += 1
            released = self._release(item_id)
            self.log("failed", id=item_id, exit_code=code, error=_last_line(text), released=released,
                     log=str(d.log_path), running=len(self.running))  # fmt: skip

    def _release(self, item_id: str) -> bool:
        """Give the claim back unless the item moved on (completed, or taken over by someone else)."""
        from wl_infer.jobs import release

        released = release(self.board, item_id, self.opts.push)
        self.stats.released += int(released)
        return released

    def renew_due(self) -> None:
        """Renew each running item's lease every third of the lease (the run may be on another machine)."""
        interval = max(1.0, self.opts.lease_s / 3)
        for d in self.running.values():
            if not d.renewing or time.monotonic() - d.renewed < interval:
                continue
            d.renewed = time.monotonic()
            try:
                self.board.mutate(self.board.new_op("renew", d.item_id, lease_seconds=self.opts.lease_s),
                                  push=self.opts.push)  # fmt: skip
            except RuleError as e:  # the run submitted (in review) or the claim was taken: nothing to renew
                d.renewing = False
                self.log("renew_stopped", id=d.item_id, reason=str(e))
            except BoardError as e:
                self.log("renew_failed", id=d.item_id, error=str(e))

    def abandon_all(self) -> None:
        """Stop every run (SIGTERM, then SIGKILL after a grace period) and release the claims they held."""
        for d in self.running.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(d.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for d in self.running.values():
            try:
                d.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(d.proc.pid, signal.SIGKILL)
                d.proc.wait(timeout=STOP_GRACE_S)
        for item_id, d in sorted(self.running.items()):
            code = d.proc.returncode
            released = self._release(item_id)
            self.log("abandoned", id=item_id, exit_code=code, released=released)
        self.running.clear()


def _last_line(text: bytes) -> str:
    lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _output_hash(text: bytes) -> str | None:
    """The hash a `wl --json infer run` reported, when the run printed its JSON document."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return data.get("output_hash") if isinstance(data, dict) else None
