"""`wl infer canary`: the command around wl_infer.canary (progress lines, tables, the rig record, exit status)."""

from __future__ import annotations

from typing import Any

import click

from board.cli.main import Obj
from board.cli.output import cell, emit, say
from wl_infer.canary import (
    DEFAULT_BATCHES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_THREADS,
    CanaryReport,
    Probe,
    run_canary,
)
from wl_infer.commands.params import BackendChoice


def _settings_table(report: CanaryReport) -> Any:
    from rich.table import Table

    def mark(value: bool | None) -> Any:
        return cell("n/a", style="dim") if value is None else cell("yes", style="green") if value else cell(
            "NO", style="red"
        )

    table = Table("setting", "repeatable", "agrees", "prefill accepts", "generate (s)")
    for r in report.setting_rows():
        table.add_row(cell(r["label"]), mark(r["repeatable"]), mark(r["agrees"]), mark(r["prefill_ok"]),
                      cell(f"{r['generate_s']:.2f}"))
    return table


def _rigs_table(rows: list[tuple[str, dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table("rig", "stable", "backend", "model", "cpu / gpu", "at")
    for handle, c in rows:
        plat: dict[str, Any] = c["platform"] if isinstance(c.get("platform"), dict) else {}
        inner: dict[str, Any] = plat["platform"] if isinstance(plat.get("platform"), dict) else {}
        where = str(plat.get("gpu") or inner.get("cpu") or plat.get("machine") or "?")
        stable = c.get("stable")
        table.add_row(
            cell(handle), cell(str(stable), style="green" if stable is True else "red"), cell(str(c.get("backend"))),
            cell(str(c.get("model"))), cell(where), cell(str(c.get("at"))),
        )
    return table


def _show(obj: Obj) -> None:
    board = obj.board()
    from board.api import refresh_if_online

    refresh_if_online(board)
    rows = [(r.handle, r.extra["canary"]) for r in board.view().rigs() if isinstance(r.extra.get("canary"), dict)]

    def human() -> None:
        from board.cli.output import console

        if not rows:
            say("No rig has recorded a canary yet (run `wl infer canary`).")
            return
        console().print(_rigs_table(rows))

    emit({"rigs": {h: c for h, c in rows}}, human)


@click.command("canary")
@click.option("--backend", type=BackendChoice(), default="llama-cpp",
              show_default=True)
@click.option("--model", default="gemma3:270m", show_default=True)
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 512), default=DEFAULT_MAX_TOKENS, show_default=True)
@click.option("--threads", "threads", type=click.IntRange(1, 256), multiple=True,
              help="Thread counts to try (repeatable; default 1 and 2).")
@click.option("--batch", "batches", type=click.IntRange(1, 1 << 16), multiple=True,
              help="Batch sizes to try (repeatable; default 8 and 512).")
@click.option("--no-record", is_flag=True, help="Do not record the result in this rig's board record.")
@click.option("--no-push", is_flag=True)
@click.option("--show", is_flag=True, help="Show the canaries every rig has recorded, and run nothing.")
@click.pass_obj
def canary(obj: Obj, backend: str, model: str, repeats: int, max_tokens: int, threads: tuple[int, ...],
           batches: tuple[int, ...], no_record: bool, no_push: bool, show: bool) -> None:
    """Check that this machine's backend is deterministic (exit 0 stable, 1 unstable) and record it."""
    import sys

    from board.cli.output import console, is_json
    from wl_infer.settings import backend_config

    if show:
        _show(obj)
        return
    home = obj.home
    board = None if no_record else obj.board()
    config = board.config if board is not None else home.load_config()
    human = not is_json()

    def progress(p: Probe) -> None:
        if human:
            state = "same" if p.repeatable else "DIFFERENT"
            say(f"  {p.setting.label:<22} prompt {p.prompt_index + 1}: {len(p.hashes)} run(s) {state}"
                + ("" if p.prefill_ok is None else f", prefill {'accepts' if p.prefill_ok else 'REJECTS'}"))

    report = run_canary(backend_config(home.path, config), backend, model, repeats=repeats,
                        max_tokens=max_tokens, threads=threads or DEFAULT_THREADS,
                        batches=batches or DEFAULT_BATCHES, on_probe=progress)
    mutation = None
    if board is not None:
        mutation = board.mutate(board.new_op("rig-update", None, fields={"canary": report.record()}),
                                push=not no_push)

    def out() -> None:
        from board.cli.output import report_push

        console().print(_settings_table(report))
        if report.stable:
            say(f"✓ stable: {len(report.prompts)} prompts give one output each across "
                f"{len(report.settings)} setting(s) × {repeats} run(s)", "green")
        else:
            say(f"✗ UNSTABLE: outputs differ ({', '.join(report.diverging) or 'see the table'})", "red")
        if report.prefill_agrees is False:
            say("✗ prefill scoring rejects some generated outputs", "red")
        if mutation is not None:
            say("  Recorded in this rig's board record (canary)")
            report_push(mutation)

    data = report.to_dict()
    data["recorded"] = mutation is not None
    data["pushed"] = mutation.pushed if mutation is not None else None
    emit(data, out)
    if not report.stable or report.prefill_agrees is False:
        sys.exit(1)
