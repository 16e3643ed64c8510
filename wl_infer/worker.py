"""`wl infer worker`: a long-running claim → run → submit loop that keeps the model loaded across jobs.

Generation runs in a helper thread while the main thread waits, so SIGINT/SIGTERM abandon the current job
promptly: its claim is released (the item goes back to open) and nothing is submitted; a second signal exits
at once. Results are saved under `$WL_HOME/results/` before submission, and a worker resubmits what an earlier
run left there. `--once` exits 0 after one job or with a `no_job` event when nothing is runnable, 1 when the
job it took failed. Signals and claiming live in wl_infer/automation.py (shared with the feeder), one job's
pieces in wl_infer/jobrun.py, saved results in wl_infer/saved.py; the command is wl_infer/commands/worker.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from board.api import BoardError
from wl_infer.automation import (
    TICK_S,
    Filters,
    Log,
    PaidWork,
    Poller,
    StopSignals,
    claim_batch,
    claim_item,
    decode_job,
    runnable_items,
)
from wl_infer.errors import CodecError
from wl_infer.jobrun import JobRun, LeaseWatch, ModelCheck, release_fresh
from wl_infer.outcomes import JobOutcome
from wl_infer.preflight import check_key, refusal
from wl_infer.saved import SavedResults

if TYPE_CHECKING:
    from board.api import Board, Item
    from wl_infer.codec import Job
    from wl_infer.jobs import BackendPool


@dataclass
class WorkerOptions:
    filters: Filters = field(default_factory=Filters)
    once: bool = False
    max_jobs: int | None = None
    poll_s: float = 5.0
    lease_s: int = 1800
    idle_exit_s: float | None = None
    push: bool = True
    watch_lease: bool = False  # read the lease expiry back while a job runs (for a live panel)
    batch: int = 1  # items claimed in one push, run one after the other, their results published in one push
    fold_quiet_s: float = 1.0  # board/folding.Courtesy: main quiet this long (x1-2) before our own fold; 0: at once


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    abandoned: int = 0
    claims: int = 0
    lost_races: int = 0
    claim_retries: int = 0
    current: str | None = None
    current_model: str | None = None
    lease_expires: str | None = None
    last_rate: str = "–"

    @property
    def taken(self) -> int:
        return self.done + self.failed + self.abandoned


class Worker:
    """Polls the board and runs one job at a time with one BackendPool, so models stay loaded across jobs."""

    def __init__(self, board: Board, pool: BackendPool, opts: WorkerOptions, log: Log, stop: StopSignals) -> None:
        self.board, self.pool, self.opts, self.log, self.stop = board, pool, opts, log, stop
        self.me = board.require_handle()
        self.stats = Stats()
        self.models = ModelCheck(pool)
        self.exclude: set[str] = set()  # undecodable or failed here: never retried by this process
        self.noted: set[str] = set()  # skips already reported (a missing model is looked for again later)
        self.engine_busy = False  # an abandoned generation still runs: the pool must not be closed under it
        self.poll = Poller(board, log)
        self.saved = SavedResults(board, self.me, opts.lease_s, opts.push, log, self.poll)
        self.lease_watch = LeaseWatch(board.home, self.me)
        self.paid = PaidWork(board, self.me, log, opts.filters) if opts.filters.min_bounty is not None else None
        if not opts.once and opts.fold_quiet_s > 0:  # a loop leaves its results to others' folds while main is busy
            from board.api import Courtesy

            board.courtesy = Courtesy(opts.fold_quiet_s)

    # status for the live panel
    def status_rows(self) -> list[tuple[str, str]]:
        s = self.stats
        lease = "–"
        if s.lease_expires:
            from board.api import parse_time

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
                "resubmitted": self.saved.resubmitted}  # fmt: skip

    # the loop
    def run(self) -> int:
        """Exit status: 0, or 1 when --once took a job and it failed."""
        if self.board.view().rig(self.me) is None:
            from board.api import NotRegistered

            raise NotRegistered(self.me)
        check_key(self.board)  # issue 10: a key that cannot sign fails now, not after generating
        self.log("started", rig=self.me, pid=os.getpid(), backend=self.opts.filters.backend,
                 model=self.opts.filters.model, lease_seconds=self.opts.lease_s, poll=self.opts.poll_s)  # fmt: skip
        self.saved.resubmit()
        idle_since: float | None = None
        status = 0
        while not self.stop.is_set():
            if self.opts.max_jobs is not None and self.stats.taken >= self.opts.max_jobs:
                break
            online = self.poll()
            outcome = None
            if online:
                self.saved.retry_kept(force=False)
                outcome = self.try_one()
            if outcome is None:  # no job found (offline, none can be): idle
                if self.opts.once:
                    self.log("no_job", **({} if online else {"reason": "offline"}))
                    break
                if not online and self._undelivered():  # results to publish: wait for the remote, not idle
                    idle_since = None
                    self.stop.wait(self.opts.poll_s)
                    continue
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
                status = 1 if outcome is JobOutcome.FAILED else 0  # abandoned on a signal is a clean stop
                break
        if self.stop.signum is not None:
            self.log("stopping", signal=signal.Signals(self.stop.signum).name)
        self.board.courtesy = None  # what is left on lanes is folded now, main busy or not
        self.saved.retry_kept(force=True)
        if self._undelivered():  # a push or a fold that failed: once more
            self.poll()
            if self.board.pending():
                self.log("unpublished", count=len(self.board.pending()), note="run `wl sync` when the remote is back")
        self.log("stopped", **self.summary())
        return status

    def _undelivered(self) -> bool:
        """Whether this rig holds results (or other operations) the commons does not have yet."""
        from board.api import own_results

        return bool(self.board.pending() or own_results(self.board))

    def try_one(self) -> JobOutcome | None:
        """Claim and run the first runnable item (or a batch of them); None when there was nothing to take."""
        want = self.opts.batch
        if self.opts.once:
            want = 1
        elif self.opts.max_jobs is not None:
            want = min(want, self.opts.max_jobs - self.stats.taken)
        for item, job in self.paid.ready(self.board.view().items(), self.exclude) if self.paid else ():
            return self.execute(item.id, job)  # a held bounty claim its poster has now assigned to this rig
        if want > 1:
            return self.try_batch(want)
        for item, job in self.candidates():
            if self.stop.is_set():
                return JobOutcome.STOPPED
            if not self.claim(item) or (self.paid is not None and not self.paid.admit(item)):
                continue
            return self.execute(item.id, job)
        return None

    def candidates(self) -> Iterator[tuple[Item, Job]]:
        """Runnable items this worker can take, with their jobs, in the order it tries them."""
        from board.api import utcnow

        for item in runnable_items(self.board.view().items(), utcnow(), self.exclude):
            try:
                job = decode_job(item)
            except CodecError as e:
                self._skip(item.id, str(e), permanent=True)
                continue
            if not self.opts.filters.admit(job) or not self.opts.filters.pays_enough(item):
                continue
            problem = self.models.problem(job)
            if problem is not None:
                self._skip(item.id, problem, permanent=False)
                continue
            if (refused := refusal(job, self.pool)) is not None:  # issue 10: limits before the claim, for good
                self._skip(item.id, refused, permanent=True)
                continue
            yield item, job

    def try_batch(self, want: int) -> JobOutcome | None:
        """Claim up to `want` items in one push (each on its own lane), run them one by one, and publish their
        results in one push; a result that cannot be published stays saved and is submitted later."""
        picked = []
        for pair in self.candidates():
            picked.append(pair)
            if len(picked) >= want:
                break
        if not picked:
            return None
        won = claim_batch(self.board, [item.id for item, _ in picked], self.opts.lease_s, self.log)
        self.stats.claims += len(won)
        self.stats.lost_races += len(picked) - len(won)
        outcome: JobOutcome | None = None
        for item, job in picked:
            if item.id not in won or (self.paid is not None and not self.paid.admit(item)):
                continue
            if self.stop.is_set():
                release_fresh(self.board.home, item.id, self.opts.push)
                outcome = JobOutcome.STOPPED
                continue
            outcome = self.execute(item.id, job, push=False)
        if self.opts.push:
            self.poll()  # the batch's results, committed locally, go out in one push
        return outcome if outcome is not None else (JobOutcome.STOPPED if self.stop.is_set() else None)

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

    def execute(self, item_id: str, job: Job, push: bool | None = None) -> JobOutcome:
        """Run one claimed job on a helper thread; abandon it (releasing the claim) if a signal arrives first."""
        from wl_infer.jobs import FRESH_S, run_item

        s = self.stats
        s.current, s.current_model = item_id, f"{job.model} via {job.backend}"
        run = JobRun(self.log)
        started = time.monotonic()
        thread = run.start(
            lambda: run_item(self.board, item_id, self.pool, skip_claim=True, push=self.opts.push, submit_push=push,
                             lease_seconds=self.opts.lease_s, on_event=run.checkpoint, cancel=run._abandoned,
                             before_publish=self.paid.commit if self.paid else None, reuse_fetch_s=FRESH_S),  # fmt: skip
            name=f"job-{item_id}",
        )
        try:
            while not run.finished.wait(TICK_S):
                if self.opts.watch_lease:
                    s.lease_expires = self.lease_watch.expires(item_id) or s.lease_expires
                if self.stop.is_set() and run.abandon():
                    released = release_fresh(self.board.home, item_id, self.opts.push)
                    self.engine_busy = thread.is_alive()
                    s.abandoned += 1
                    self.log("abandoned", id=item_id, released=released,
                             signal=signal.Signals(self.stop.signum).name if self.stop.signum else None)  # fmt: skip
                    return JobOutcome.ABANDONED
        finally:
            s.current = s.current_model = s.lease_expires = None
        return self._finished(item_id, run, round(time.monotonic() - started, 3))

    def _finished(self, item_id: str, run: JobRun, elapsed: float) -> JobOutcome:
        """Count and report how a job that ran to its end came out; give back the claim of one that failed."""
        from wl_infer.jobs import ResultKept, RunFailed

        s, err = self.stats, run.error
        if err is None:
            res = run.result
            s.done += 1
            gen = res.generation
            if gen.n_tokens and gen.elapsed_s > 0:
                s.last_rate = f"{gen.n_tokens / gen.elapsed_s:.1f}"
            self.log("done", id=item_id, output_hash=res.evidence.output_hash, tokens=gen.n_tokens or 0,
                     generate_s=round(gen.elapsed_s, 3), elapsed_s=elapsed, pushed=res.mutation.pushed)  # fmt: skip
            return JobOutcome.DONE
        s.failed += 1
        self.exclude.add(item_id)
        saved = self.saved.path(item_id)
        if isinstance(err, ResultKept) or (not isinstance(err, RunFailed) and saved.exists()):
            # generated and saved, but the submission failed: keep the claim and submit it again later
            self.saved.keep(item_id)
            self.log("result_kept", id=item_id, error=f"{type(err).__name__}: {err}", path=str(saved))
            return JobOutcome.FAILED
        released = release_fresh(self.board.home, item_id, self.opts.push)
        if not isinstance(err, Exception):
            raise err
        if isinstance(err, RunFailed | BoardError):
            self.log("failed", id=item_id, error=str(getattr(err, "error", err)), released=released)
        else:  # an engine failing in a way it does not report: give the claim back and go on
            self.log("failed", id=item_id, error=f"{type(err).__name__}: {err}", released=released)
        return JobOutcome.FAILED

    def close(self) -> None:
        self.lease_watch.close()
