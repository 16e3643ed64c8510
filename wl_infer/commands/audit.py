"""`wl infer audit`: the command around wl_infer.audit (selection and results as tables, exit status)."""

from __future__ import annotations

from typing import Any

import click

from board.cli.main import Obj
from board.cli.output import cell, emit, say
from wl_infer.audit import AuditEntry, AuditPlan, AuditReport, plan_audit, run_audit
from wl_infer.outcomes import AuditOutcome


def _selection_table(plan: AuditPlan) -> Any:
    from rich.table import Table

    table = Table("item", "worker", "status", "score", title="Selected for audit", title_justify="left")
    for c in plan.selected:
        table.add_row(cell(c.item_id), cell(c.worker), cell(c.status), cell(f"{c.score:.4f}"))
    return table


def _summary_table(report: AuditReport) -> Any:
    from rich.table import Table

    table = Table("worker", "checked", "verified", "mismatched", "invalid", "could not verify")
    for worker, s in report.summary().items():
        bad = s.mismatched + s.invalid
        table.add_row(
            cell(worker, style="red" if bad else ""),
            *(cell(str(n)) for n in (s.checked, s.verified, s.mismatched, s.invalid, s.could_not_verify)),
        )
    return table


def _entry_line(e: AuditEntry) -> None:
    c = e.candidate
    mode = f" ({e.verdict.mode})" if e.verdict else ""
    if e.outcome is AuditOutcome.VERIFIED:
        say(f"  ✓ {c.item_id}  {c.worker}  VERIFIED{mode}", "green")
        return
    style = "yellow" if e.outcome is AuditOutcome.COULD_NOT_VERIFY else "red"
    say(f"  ✗ {c.item_id}  {c.worker}  {e.outcome}{mode}: {e.reason or 'hashes differ'}", style)
    d = e.verdict.divergence if e.verdict else None
    if d and d.get("position") is not None:
        say(f"      diverges at token {d['position']}: claimed {d.get('claimed_token')}, "
            f"expected {d.get('expected_token')}", style)


@click.command("audit")
@click.option("--rate", type=click.FloatRange(0.0, 1.0), default=0.1, show_default=True,
              help="Share of eligible completions to check.")
@click.option("--limit", type=click.IntRange(1, None), default=None, help="Check at most N of the selected.")
@click.option("--mode", type=click.Choice(["rerun", "prefill", "auto"]), default="auto", show_default=True)
@click.option("--no-record", is_flag=True, help="Do not record attestations on the board.")
@click.option("--no-push", is_flag=True)
@click.option("--dry-run", is_flag=True, help="List the selection without verifying anything.")
@click.pass_obj
def audit(obj: Obj, rate: float, limit: int | None, mode: str, no_record: bool, no_push: bool, dry_run: bool) -> None:
    """Spot-check others' completions, chosen from the board head: exit 0 all verified, 1 any MISMATCH/INVALID, 3 none verifiable."""
    import sys

    from board.cli.output import console, is_json
    from wl_infer.jobs import open_pool

    board = obj.board()
    plan = plan_audit(board, rate, limit)
    human = not is_json()
    if human:
        skipped = len(plan.skipped_own) + len(plan.skipped_attested)
        say(f"Audit seed {plan.seed} (head{'' if plan.refreshed else ', local: not fetched'}); rate {rate:g}: "
            f"{len(plan.selected)} of {len(plan.eligible)} eligible selected"
            + (f", {plan.over_limit} over --limit" if plan.over_limit else "")
            + (f"; {skipped} skipped (own or already attested)" if skipped else ""))
    if dry_run:
        report = AuditReport(plan, mode, dry_run=True)
    else:
        with open_pool(board) as pool:
            report = run_audit(board, pool, plan, mode=mode, record=not no_record, push=not no_push,
                               on_entry=_entry_line if human else None)

    def show() -> None:
        if not plan.selected:
            say("Nothing selected to audit.")
            return
        if dry_run:
            console().print(_selection_table(plan))
            return
        if report.entries:
            console().print(_summary_table(report))
        if report.exit_code == 3:
            say("Nothing selected could be verified here.", "yellow")

    emit(report.to_dict(), show)
    if report.exit_code:
        sys.exit(report.exit_code)
