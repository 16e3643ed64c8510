"""`wl infer feed`: the command around wl_infer.feeder.Feeder (options, signals, the event log, exit status)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from wl_infer.automation import MAX_LEASE_S
from wl_infer.commands.params import BackendChoice, limit_options

if TYPE_CHECKING:
    from wl_infer.feeder import Feeder


@click.command("feed")
@click.option("--workers", "slots", type=click.IntRange(1, 256), default=1, show_default=True, help="Runs at a time.")
@click.option("--command", default=None, help='Run template per item, {id} (and {home}) substituted, e.g. "ssh gpu1 wl infer run {id} --skip-claim". Split like a shell, never run by one.')
@click.option("--poll", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True, help="Seconds between looks at the board.")
@click.option("--once", is_flag=True, help="Dispatch one round (up to --workers items), wait for it, exit.")
@click.option("--max-jobs", type=click.IntRange(1, None), default=None, help="Dispatch at most this many items, then exit when they finish.")
@click.option("--lease", type=click.IntRange(1, MAX_LEASE_S // 60), default=None, help="Claim lease in minutes, renewed while runs go (default: config lease, else 30).")
@click.option("--lease-seconds", "lease_s", type=click.IntRange(1, MAX_LEASE_S), default=None, hidden=True)
@click.option("--idle-exit", type=click.FloatRange(0, None), default=None, help="Exit once nothing has run or been found for this many seconds.")
@click.option("--backend", type=BackendChoice(), default=None, help="Only dispatch jobs for this backend.")
@click.option("--model", default=None, help="Only dispatch jobs for this model.")
@limit_options
@click.pass_obj
def feed(obj: Any, /, slots: int, command: str | None, poll: float, once: bool, max_jobs: int | None,
         lease: int | None, lease_s: int | None, idle_exit: float | None, backend: str | None,
         model: str | None, **limit_flags: Any) -> None:  # fmt: skip
    """Claim open inference items under this rig's handle and start a run for each, N at a time.

    SIGINT/SIGTERM stop the runs and release their claims; a second signal exits at once.
    """
    from wl_infer.automation import Filters, StopSignals, resolve_lease
    from wl_infer.commands.events import EventLog, wants_document, wants_live
    from wl_infer.feeder import Feeder, FeedOptions, parse_template
    from wl_infer.limits import limit_argv, resolve_limits

    board = obj.board()
    template = parse_template(command)
    if command is None:  # our own runs get the limits given here (a custom --command sets its own)
        template += limit_argv(limit_flags)
    opts = FeedOptions(
        limits=resolve_limits(board.config, **limit_flags),
        template=template, slots=slots, filters=Filters(backend, model), once=once,
        max_jobs=max_jobs, poll_s=poll, lease_s=resolve_lease(board, lease, lease_s), idle_exit_s=idle_exit,
    )  # fmt: skip
    holder: list[Feeder] = []

    def left() -> str:
        running = sorted(holder[0].running) if holder else []
        return f"runs left going: {', '.join(running)}" if running else ""

    def rows() -> list[tuple[str, str]]:
        return holder[0].status_rows() if holder else []

    with StopSignals(left) as stop, EventLog(wants_live(), "wl infer feed", rows, wants_document(once)) as log:
        f = Feeder(board, opts, log, stop)
        holder.append(f)
        try:
            status = f.run()
            log.exit_code = status
        except BaseException:
            f.abandon_all()  # never leave runs going with nobody renewing or releasing their claims
            raise
    if status:
        click.get_current_context().exit(status)
