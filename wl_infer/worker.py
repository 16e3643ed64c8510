"""`wl infer worker`: a long-running claim → run → submit loop that keeps the model loaded across jobs.

Generation runs in a helper thread while the main thread waits, so SIGINT/SIGTERM abandon the current job
promptly: its claim is released (the item goes back to open) and nothing is submitted; a second signal exits
at once. Results are saved under `$WL_HOME/results/` before submission, and a worker resubmits what an earlier
run left there. `--once` exits 0 after one job or with a `no_job` event when nothing is runnable, 1 when the
job it took failed. The event log, signals and claiming live in wl_infer/automation.py, shared with the feeder.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from board.errors import BoardError
from wl_infer.automation import (
    BACKENDS,
    MAX_LEASE_S,
    TICK_S,
    EventLog,
    Filters,
    Poller,
    StopSignals,
    claim_item,
    decode_job,
    resolve_lease,
    runnable_items,
    wants_live,
)
from wl_infer.limits import limit_options
from wl_infer.preflight import check_key, refusal

if TYPE_CHECKING:
    from board.records import Item
    from board.service import Board
    from wl_infer.codec import Job
    from wl_infer.jobs import BackendPool

RESOLVE_TTL_S = 120.0  # how long "this machine has (or lacks) model M" is trusted before asking again
KEPT_RETRY_S = 10.0  # how soon a result whose submission failed is submitted again


# --- choosing work --------------------------------------------------------------------------------------------
class ModelCheck:
    """Whether this machine holds a job's model (and its pinned weights), asked of the pool's backend and cached."""

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool
        self._cache: dict[tuple[str, str], tuple[float, str | None, str | None]] = {}

    def problem(self, job: Job) -> str | None:
        from wl_infer.backends import BackendError

        key = (job.backend, job.model)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] > RESOLVE_TTL_S:
            try:
                cached = (time.monotonic(), self.pool.get(job.backend).resolve(job.model).digest, None)
            except BackendError as e:
                cached = (time.monotonic(), None, str(e))
            except Exception as e:  # noqa: BLE001 - an engine that cannot even look is one this machine lacks
                cached = (time.monotonic(), None, f"{job.backend}: {type(e).__name__}: {e}")
            self._cache[key] = cached
        _, digest, error = cached
        if error is not None:
            return error
        if job.model_digest and digest != job.model_digest:
            return f"pinned weights {job.model_digest} are not here ({job.backend} has {digest or 'no digest'})"
        return None

# --- the worker --------------------------------------------------------------------------------------------
@dataclass
class WorkerOptions:
    filters: Filters = field(default_factory=Filters)
    once: bool = False
    max_jobs: int | None = None
    poll_s: float = 5.0
    lease_s: int = 1800
    idle_exit_s: float | None = None
    push: bool = True


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    abandoned: int = 0
    claims: int = 0
    lost_races: int = 0
    claim_retries: int = 0
    resubmitted: int = 0
    current: str | None = None
    current_model: str | None = None
    lease_expires: str | None = None
    last_rate: str = "–"

    @property
    def taken(self) -> int:
        return self.done + self.failed + self.abandoned


class Abandoned(Exception):
    """Raised inside the job thread at a checkpoint once the main thread has given the job up."""


class JobRun:
    """One job on a helper thread; the main thread may abandon it until submission has begun."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = threading.Event()  # also the job's cancel flag: the engine stops at its next token
        self._submitting = False

    def checkpoint(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if self._abandoned.is_set():
                raise Abandoned()
            if event == "generated":
                self._submitting = True  # from here on the job is finished, never abandoned
        self.log(event, **data)

    def abandon(self) -> bool:
        with self._lock:
            if self._submitting:
                return False
            self._abandoned.set()
            return True

    def start(self, work: Callable[[], Any], name: str) -> threading.Thread:
        def target() -> None:
            try:
                self.result = work()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which decides
                self.error = e
            finally:
                self.finished.set()

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread


class Worker:
    """Polls the board and runs one job at a time with one BackendPool, so models stay loaded across jobs."""

    def __init__(self, board: Board, pool: BackendPool, opts: WorkerOptions, log: EventLog, stop: StopSignals) -> None:
        self.board, self.pool, self.opts, self.log, self.stop = board, pool, opts, log, stop
        self.me = board.require_handle()
        self.stats = Stats()
        self.models = ModelCheck(pool)
        self.exclude: set[str] = set()  # undecodable or failed here: never retried by this process
        self.noted: set[str] = set()  # skips already reported (a missing model is looked for again later)
        self.kept: dict[str, float] = {}  # results generated here whose submission failed: id -> when to retry
        self.engine_busy = False  # an abandoned generation still runs: the pool must not be closed under it
        self.poll = Poller(board, log)
        self._lease_board: Board | None = None

    # status for the live panel
    def status_rows(self) -> list[tuple[str, str]]:
        s = self.stats
        lease = "–"
        if s.lease_expires:
            from board.ids import parse_time

            left = (parse_time(s.lease_expires) - datetime.now(UTC)).total_seconds()
            lease = f"{max(0, int(left))} s" if left > 0 else "expired"
        return [
            ("Rig", self.me),
            ("Current job", f"{s.current} ({s.current_model})" if s.current else "idle"),
            ("Tokens/s", s.last_rate),
            ("Lease left", lease),
            ("Done / failed / skipped", f"{s.done} / {s.failed} / {s.skipped}"),
            ("Claims / lost races / CAS retries", f"{s.claims} / {s.lost_races} / {s.claim_retries}"),
        ]

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {"done": s.done, "failed": s.failed, "skipped": s.skipped, "abandoned": s.abandoned,
                "claims": s.claims, "lost_races": s.lost_races, "claim_retries": s.claim_retries,
                "resubmitted": s.resubmitted}  # fmt: skip

    # the loop
    def run(self) -> int:
        """Exit status: 0, or 1 when --once took a job and it failed."""
        if self.board.view().rig(self.me) is None:
            from board.errors import NotRegistered

            raise NotRegistered(self.me)
        check_key(self.board)  # issue 10: a key that cannot sign fails now, not after generating
        self.log("started", rig=self.me, pid=os.getpid(), backend=self.opts.filters.backend,
                 model=self.opts.filters.model, lease_seconds=self.opts.lease_s, poll=self.opts.poll_s)  # fmt: skip
        self.resubmit_saved()
        idle_since: float | None = None
        status = 0
        while not self.stop.is_set():
            if self.opts.max_jobs is not None and self.stats.taken >= self.opts.max_jobs:
                break
            if not self.poll():
                self.stop.wait(self.opts.poll_s)
                continue
            self._retry_kept(force=False)
            outcome = self.try_one()
            if outcome is None:
                if self.opts.once:
                    self.log("no_job")
                    break
                if idle_since is None:
                    idle_since = time.monotonic()
                    self.log("idle")
                if self.opts.idle_exit_s is not None and time.monotonic() - idle_since >= self.opts.idle_exit_s:
                    self.log("idle_exit", idle_seconds=round(time.monotonic() - idle_since, 1))
                    break
                self.stop.wait(self.opts.poll_s)
                continue
            idle_since = None
            if self.opts.once:
                status = 1 if outcome == "failed" else 0  # abandoned on a signal is a clean stop
                break
        if self.stop.signum is not None:
            self.log("stopping", signal=signal.Signals(self.stop.signum).name)
        self._retry_kept(force=True)
        if self.board.pending():  # a push that failed earlier: one more try before leaving
            self.poll()
            if self.board.pending():
                self.log("unpublished", count=len(self.board.pending()), note="run `wl sync` when the remote is back")
        self.log("stopped", **self.summary())
        return status

    def try_one(self) -> str | None:
        """Claim and run the first runnable item; None when there was nothing to take."""
        from board.ids import utcnow

        for item in runnable_items(self.board.view().items(), utcnow(), self.exclude):
            if self.stop.is_set():
                return "stopped"
            job = decode_job(item)
            if isinstance(job, str):
                self._skip(item.id, job, permanent=True)
                continue
            if not self.opts.filters.admit(job):
                continue
            problem = self.models.problem(job)
            if problem is not None:
                self._skip(item.id, problem, permanent=False)
                continue
            if (refused := refusal(job, self.pool)) is not None:  # issue 10: limits before the claim, for good
                self._skip(item.id, refused, permanent=True)
                continue
            if not self.claim(item):
                continue
            return self.execute(item.id, job)
        return None

    def _skip(self, item_id: str, reason: str, permanent: bool) -> None:
        if permanent:
            self.exclude.add(item_id)
        if item_id not in self.noted:
            self.noted.add(item_id)
            self.stats.skipped += 1
            self.log("skipped", id=item_id, reason=reason)

    def claim(self, item: Item) -> bool:
        res, retries = claim_item(self.board, item.id, self.opts.lease_s, self.opts.push, self.log)
        self.stats.claim_retries += retries
        if res is None:
            self.stats.lost_races += 1
            return False
        self.stats.claims += 1
        self.stats.lease_expires = res.result.get("claim_expires_at")
        return True

    def execute(self, item_id: str, job: Job) -> str:
        """Run one claimed job on a helper thread; abandon it (releasing the claim) if a signal arrives first."""
        from wl_infer.jobs import ResultKept, RunFailed, run_item

        s = self.stats
        s.current, s.current_model = item_id, f"{job.model} via {job.backend}"
        run = JobRun(self.log)
        started = time.monotonic()
        thread = run.start(
            lambda: run_item(self.board, item_id, self.pool, skip_claim=True, push=self.opts.push,
                             lease_seconds=self.opts.lease_s, on_event=run.checkpoint, cancel=run._abandoned),  # fmt: skip
            name=f"job-{item_id}",
        )
        try:
            while not run.finished.wait(TICK_S):
                if self.log.live:
                    self._watch_lease(item_id)
                if self.stop.is_set() and run.abandon():
                    released = self._release_fresh(item_id)
                    self.engine_busy = thread.is_alive()
                    s.abandoned += 1
                    self.log("abandoned", id=item_id, released=released,
                             signal=signal.Signals(self.stop.signum).name if self.stop.signum else None)  # fmt: skip
                    return "abandoned"
        finally:
            s.current = s.current_model = s.lease_expires = None
        elapsed = round(time.monotonic() - started, 3)
        err = run.error
        if err is None:
            res = run.result
            s.done += 1
            gen = res.generation
            if gen.tokens and gen.elapsed_s > 0:
                s.last_rate = f"{len(gen.tokens) / gen.elapsed_s:.1f}"
            self.log("done", id=item_id, output_hash=res.evidence.output_hash, tokens=len(gen.tokens or []),
                     generate_s=round(gen.elapsed_s, 3), elapsed_s=elapsed, pushed=res.mutation.pushed)  # fmt: skip
            return "done"
        s.failed += 1
        self.exclude.add(item_id)
        from wl_infer.jobs import results_dir

        saved = results_dir(self.board) / f"{item_id}.json"
        if isinstance(err, ResultKept) or (not isinstance(err, RunFailed) and saved.exists()):
            # generated and saved, but the submission failed: keep the claim and submit it again later
            self.kept[item_id] = time.monotonic() + KEPT_RETRY_S
            self.log("result_kept", id=item_id, error=f"{type(err).__name__}: {err}", path=str(saved))
            return "failed"
        if isinstance(err, RunFailed | BoardError):
            released = self._release_fresh(item_id)
            self.log("failed", id=item_id, error=str(getattr(err, "error", err)), released=released)
            return "failed"
        if not isinstance(err, Exception):
            self._release_fresh(item_id)
            raise err
        # a codec error, or an engine failing in a way it does not report: give the claim back and go on
        self.log("failed", id=item_id, error=f"{type(err).__name__}: {err}", released=self._release_fresh(item_id))
        return "failed"

    def _retry_kept(self, force: bool) -> None:
        """Submit again what this process generated but could not submit (every KEPT_RETRY_S, and on exit)."""
        from wl_infer.jobs import results_dir

        due = {i for i, when in self.kept.items() if force or when <= time.monotonic()}
        if not due:
            return
        self.resubmit_saved(only=due)
        for item_id in due:
            if (results_dir(self.board) / f"{item_id}.json").exists():
                self.kept[item_id] = time.monotonic() + KEPT_RETRY_S
            else:
                del self.kept[item_id]

    def _release_fresh(self, item_id: str) -> bool:
        """Release through a fresh board handle: the job thread may still hold the worker's one."""
        from board.home import Home
        from board.service import Board
        from wl_infer.jobs import release

        with Board(Home(self.board.home.path)) as b:
            return release(b, item_id, self.opts.push)

    def _watch_lease(self, item_id: str) -> None:
        """Lease expiry as the renewals leave it in the local clone (read from a second handle, no network)."""
        from board.home import Home
        from board.service import Board

        try:
            if self._lease_board is None:
                self._lease_board = Board(Home(self.board.home.path))
            item = self._lease_board.view().item(item_id)
            if item is not None and item.claimed_by == self.me:
                self.stats.lease_expires = item.claim_expires_at
        except BoardError:
            pass

    def close(self) -> None:
        if self._lease_board is not None:
            self._lease_board.close()

    # results a previous run computed but did not get onto the board
    def resubmit_saved(self, only: set[str] | None = None) -> None:
        """Submit results saved by a run that crashed or could not push; unsubmittable ones are moved aside.

        At start-up every saved result is taken; in the loop only those this process generated (`only`): a
        feeder's run sharing the home may be about to submit its own."""
        from wl_infer.jobs import results_dir

        folder = results_dir(self.board)
        saved = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if only is not None:
            saved = [p for p in saved if p.stem in only]
        if not saved:
            return
        if not self.poll():
            self.log("resubmit_later", count=len(saved), reason="remote unreachable")
            return
        for path in saved:
            self._resubmit(path)

    def _resubmit(self, path: Path) -> None:
        from board import layout
        from board.ids import check_item_id, new_completion_id, utcnow
        from board.ops import lease_expired
        from wl_infer.codec import CodecError, Evidence

        try:
            record = orjson.loads(path.read_bytes())
            item_id = check_item_id(str(record["item_id"]))
            evidence = Evidence.from_dict(record["evidence"])
            blob = record.get("blob")
            item = self.board.get_item(item_id)
            comp = self.board.view().completion(item_id)
        except (OSError, KeyError, TypeError, orjson.JSONDecodeError, CodecError, BoardError) as e:
            self._set_aside(path, f"unreadable saved result: {e}")
            return
        if comp is not None and comp.completed_by == self.me and evidence.output_hash in comp.evidence:
            path.unlink(missing_ok=True)  # it did reach the board before the crash
            self.log("resubmitted", id=item_id, already_on_board=True)
            return
        mine = item.status == "claimed" and item.claimed_by == self.me
        claimable = item.status == "open" or (item.status == "claimed" and lease_expired(item, utcnow()))
        if not mine and not claimable:
            self._set_aside(path, f"item is {item.status}" + (f" by {item.claimed_by}" if item.claimed_by else ""))
            return
        attachments = {}
        if evidence.output_blob and blob is not None:
            attachments[layout.blob_path(evidence.output_blob.removeprefix("sha256:"))] = str(blob).encode("utf-8")
        try:
            if not mine:
                self.board.mutate(self.board.new_op("claim", item_id, lease_seconds=self.opts.lease_s), push=self.opts.push)
            op = self.board.new_op("done", item_id, evidence=evidence.encode(), completion_id=new_completion_id())
            res = self.board.mutate(op, attachments=attachments, push=self.opts.push)
        except BoardError as e:
            self.log("resubmit_failed", id=item_id, error=str(e), path=str(path))
            return
        path.unlink(missing_ok=True)
        self.stats.resubmitted += 1
        self.log("resubmitted", id=item_id, output_hash=evidence.output_hash, pushed=res.pushed, reclaimed=not mine)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Keep what cannot be submitted (nothing computed is deleted), out of the way of the next start."""
        aside = path.parent / "unsubmitted"
        aside.mkdir(parents=True, exist_ok=True)
        os.replace(path, aside / path.name)
        self.log("unsubmittable", file=path.name, reason=reason, kept=str(aside / path.name))

# --- the command -----------------------------------------------------------------------------------------------
@click.command("worker")
@click.option("--backend", type=BACKENDS, default=None, help="Only take jobs for this backend.")
@click.option("--model", default=None, help="Only take jobs for this model.")
@click.option("--once", is_flag=True, help="Run one job, then exit (exit 0 with a 'no_job' event when there is none).")
@click.option("--max-jobs", type=click.IntRange(1, None), default=None, help="Exit after taking this many jobs.")
@click.option("--poll", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True, help="Seconds between polls when idle.")
@click.option("--lease", type=click.IntRange(1, MAX_LEASE_S // 60), default=None, help="Claim lease in minutes, renewed while a job runs (default: config lease, else 30).")
@click.option("--lease-seconds", "lease_s", type=click.IntRange(1, MAX_LEASE_S), default=None, hidden=True)
@click.option("--idle-exit", type=click.FloatRange(0, None), default=None, help="Exit once no job has been found for this many seconds.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Engine threads (recorded in the envelope).")
@limit_options
@click.pass_obj
def worker(obj: Any, backend: str | None, model: str | None, once: bool, max_jobs: int | None, poll: float,
           lease: int | None, lease_s: int | None, idle_exit: float | None, threads: int | None, **limits: Any) -> None:  # fmt: skip
    """Claim → run → submit open inference jobs until stopped, keeping the model loaded.

    SIGINT/SIGTERM abandon the current job and release its claim; a second signal exits at once.
    """
    from wl_infer.jobs import BackendPool
    from wl_infer.settings import backend_config

    board = obj.board()
    opts = WorkerOptions(
        filters=Filters(backend, model), once=once, max_jobs=max_jobs, poll_s=poll,
        lease_s=resolve_lease(board, lease, lease_s), idle_exit_s=idle_exit,
    )  # fmt: skip
    pool = BackendPool(backend_config(board.home.path, board.config, threads=threads, **limits))
    holder: list[Worker] = []

    def left() -> str:
        current = holder[0].stats.current if holder else None
        return f"the claim on {current} is left to expire" if current else ""

    def rows() -> list[tuple[str, str]]:
        return holder[0].status_rows() if holder else []

    with StopSignals(left) as stop, EventLog(wants_live(), "wl infer worker", rows) as log:
        w = Worker(board, pool, opts, log, stop)
        holder.append(w)
        try:
            status = w.run()
        finally:
            w.close()
            if not w.engine_busy:
                pool.close()
    if status:
        click.get_current_context().exit(status)
