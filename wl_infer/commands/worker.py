"""`wl infer worker`: the command around wl_infer.worker.Worker (options, signals, the event log, exit status)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from wl_infer.automation import MAX_LEASE_S
from wl_infer.commands.params import BackendChoice, limit_options

if TYPE_CHECKING:
    from wl_infer.worker import Worker


@click.command("worker")
@click.option("--backend", type=BackendChoice(), default=None, help="Only take jobs for this backend.")
@click.option("--model", default=None, help="Only take jobs for this model.")
@click.option("--once", is_flag=True, help="Run one job, then exit (exit 0 with a 'no_job' event when there is none).")
@click.option("--max-jobs", type=click.IntRange(1, None), default=None, help="Exit after taking this many jobs.")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Claim this many jobs in one push and publish their results in one push (for short jobs).")
@click.option("--poll", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True, help="Seconds between polls when idle.")
@click.option("--lease", type=click.IntRange(1, MAX_LEASE_S // 60), default=None, help="Claim lease in minutes, renewed while a job runs (default: config lease, else 30).")
@click.option("--lease-seconds", "lease_s", type=click.IntRange(1, MAX_LEASE_S), default=None, hidden=True)
@click.option("--idle-exit", type=click.FloatRange(0, None), default=None, help="Exit once no job has been found for this many seconds (offline counts, unless results wait to be published).")
@click.option("--fold-quiet", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="While others moved main within this many seconds (times 1 to 2), leave results on their lanes for "
                   "their folds to carry; 0: always fold at once.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Engine threads (recorded in the envelope).")
@click.option("--min-bounty", metavar="AMOUNT", default=None,
              help="Only take jobs whose recorded bounty is at least AMOUNT (0.01, 5gwei, …); each is held until its "
                   "poster assigns this rig on chain, then staked and submitted before it is published.")
@limit_options
@click.pass_obj
def worker(obj: Any, /, backend: str | None, model: str | None, once: bool, max_jobs: int | None, batch: int, poll: float,
           lease: int | None, lease_s: int | None, idle_exit: float | None, fold_quiet: float, threads: int | None,
           min_bounty: str | None, **limits: Any) -> None:  # fmt: skip
    """Claim → run → submit open inference jobs until stopped, keeping the model loaded.

    SIGINT/SIGTERM abandon the current job and release its claim; a second signal exits at once.
    """
    from wl_infer.automation import Filters, StopSignals, resolve_lease
    from wl_infer.commands.events import EventLog, wants_document, wants_live
    from wl_infer.jobs import BackendPool
    from wl_infer.settings import backend_config
    from wl_infer.worker import Worker, WorkerOptions

    board = obj.board()
    floor = None
    if min_bounty is not None:
        from wl_infer.bounty_board import parse_amount

        floor = parse_amount(min_bounty)
    opts = WorkerOptions(
        filters=Filters(backend, model, floor), once=once, max_jobs=max_jobs, poll_s=poll,
        lease_s=resolve_lease(board, lease, lease_s), idle_exit_s=idle_exit, batch=batch, fold_quiet_s=fold_quiet,
    )  # fmt: skip
    pool = BackendPool(backend_config(board.home.path, board.config, threads=threads, **limits))
    holder: list[Worker] = []

    def left() -> str:
        current = holder[0].stats.current if holder else None
        return f"the claim on {current} is left to expire" if current else ""

    def rows() -> list[tuple[str, str]]:
        return holder[0].status_rows() if holder else []

    live = wants_live()
    opts.watch_lease = live
    with StopSignals(left) as stop, EventLog(live, "wl infer worker", rows, wants_document(once)) as log:
        w = Worker(board, pool, opts, log, stop)
        holder.append(w)
        try:
            status = w.run()
            log.exit_code = status
        finally:
            w.close()
            if not w.engine_busy:
                pool.close()
    if status:
        click.get_current_context().exit(status)
