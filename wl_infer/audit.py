"""Spot-check audits: verify a random share of completions, chosen so that workers cannot predict it.

Selection is a pure function of the board's head commit (read after a fetch) and the item id: an item is
audited iff `sha256(head_hex + ":" + item_id)`, read as a fraction of 2**64, is below the rate. A worker
cannot know it when submitting, because every later commit moves the head; anyone holding the same head
reproduces the selection exactly, so an audit can itself be checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from board.cli.main import Obj
from board.cli.output import emit, say
from board.errors import BoardError

if TYPE_CHECKING:  # the board and the engines load only when a command runs (`wl --help` stays fast)
    from board.service import Board
    from board.view import TreeView
    from wl_infer.jobs import BackendPool
    from wl_infer.verify import Verdict

AUDITABLE_STATUSES = ("in_review", "completed")
VERIFIED, MISMATCH, INVALID = "VERIFIED", "MISMATCH", "INVALID"  # the verdicts of wl_infer.verify
COULD_NOT_VERIFY = "COULD-NOT-VERIFY"
OUTCOME_KEYS = {VERIFIED: "verified", MISMATCH: "mismatched", INVALID: "invalid", COULD_NOT_VERIFY: "could_not_verify"}


def selection_score(seed: str, item_id: str) -> float:
    """Where this item falls in [0, 1) for this seed: the first 64 bits of sha256(seed:item_id)."""
    import hashlib  # here, not at the top: `wl --help` imports this module

    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


def is_selected(seed: str, item_id: str, rate: float) -> bool:
    return selection_score(seed, item_id) < rate


def select(seed: str, item_ids: Iterable[str], rate: float, limit: int | None = None) -> list[str]:
    """The selected ids, lowest score first (so a --limit keeps an unbiased, reproducible subset)."""
    scored = sorted((selection_score(seed, i), i) for i in set(item_ids))
    chosen = [i for s, i in scored if s < rate]
    return chosen if limit is None else chosen[:limit]


@dataclass(frozen=True)
class Candidate:
    """A completion that may be audited."""

    item_id: str
    completion_id: str
    worker: str
    status: str
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "completion_id": self.completion_id,
            "worker": self.worker,
            "status": self.status,
            "score": round(self.score, 6),
        }


@dataclass
class AuditPlan:
    """What an audit will check, and why the rest is left out."""

    seed: str
    rate: float
    limit: int | None
    refreshed: bool
    eligible: list[Candidate]
    selected: list[Candidate]
    skipped_own: list[str] = field(default_factory=list)
    skipped_attested: list[str] = field(default_factory=list)
    over_limit: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rate": self.rate,
            "limit": self.limit,
            "refreshed": self.refreshed,
            "eligible": len(self.eligible),
            "selected": [c.to_dict() for c in self.selected],
            "over_limit": self.over_limit,
            "skipped": {"own": self.skipped_own, "already_attested": self.skipped_attested},
        }


def candidates(view: TreeView, me: str) -> tuple[list[Candidate], list[str], list[str]]:
    """Inference completions others made that this rig has not yet attested at this completion id."""
    eligible: list[Candidate] = []
    own: list[str] = []
    attested: list[str] = []
    for item in view.items():
        if item.type != "inference" or item.status not in AUDITABLE_STATUSES:
            continue
        comp = view.completion(item.id)
        if comp is None:
            continue
        if comp.completed_by == me:
            own.append(item.id)
            continue
        mine = view.attestations(item.id).get(me)
        if mine is not None and mine.get("completion_id") == comp.id:
            attested.append(item.id)
            continue
        eligible.append(Candidate(item.id, comp.id, comp.completed_by, item.status))
    return eligible, sorted(own), sorted(attested)


def plan_audit(board: Board, rate: float, limit: int | None = None, *, refresh: bool = True) -> AuditPlan:
    """Fetch, fix the seed to the head commit, and pick the completions to check."""
    if not 0.0 <= rate <= 1.0:
        raise BoardError(f"audit rate must be in [0, 1], not {rate}")
    refreshed = False
    if refresh and board.remote is not None:
        try:
            board.refresh()
            refreshed = True
        except BoardError:
            pass  # offline: the local head still gives a reproducible seed (reported as not refreshed)
    seed = board.head().decode("ascii")
    me = board.require_handle()
    eligible, own, attested = candidates(board.view(), me)
    scored = sorted(
        (Candidate(c.item_id, c.completion_id, c.worker, c.status, selection_score(seed, c.item_id)) for c in eligible),
        key=lambda c: (c.score, c.item_id),
    )
    chosen = [c for c in scored if c.score < rate]
    kept = chosen if limit is None else chosen[:limit]
    return AuditPlan(seed, rate, limit, refreshed, scored, kept, own, attested, len(chosen) - len(kept))


@dataclass
class AuditEntry:
    candidate: Candidate
    outcome: str  # VERIFIED, MISMATCH, INVALID or COULD-NOT-VERIFY
    verdict: Verdict | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.candidate.to_dict(), "outcome": self.outcome, "reason": self.reason}
        v = self.verdict
        out["verdict"] = None if v is None else {
            "mode": v.mode,
            "expected": v.expected,
            "actual": v.actual,
            "divergence": v.divergence,
            "envelope_differences": v.envelope_differences,
            "recorded": v.mutation is not None,
            "pushed": v.mutation.pushed if v.mutation else None,
            "elapsed_s": round(v.elapsed_s, 3),
        }
        return out


@dataclass
class WorkerSummary:
    checked: int = 0
    verified: int = 0
    mismatched: int = 0
    invalid: int = 0
    could_not_verify: int = 0

    def add(self, outcome: str) -> None:
        self.checked += 1
        key = OUTCOME_KEYS[outcome]
        setattr(self, key, getattr(self, key) + 1)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class AuditReport:
    plan: AuditPlan
    mode: str
    dry_run: bool
    entries: list[AuditEntry] = field(default_factory=list)

    def summary(self) -> dict[str, WorkerSummary]:
        out: dict[str, WorkerSummary] = {}
        for e in self.entries:
            out.setdefault(e.candidate.worker, WorkerSummary()).add(e.outcome)
        return dict(sorted(out.items()))

    @property
    def exit_code(self) -> int:
        """0 all checked verified, 1 any MISMATCH/INVALID, 3 something selected but nothing verifiable."""
        outcomes = {e.outcome for e in self.entries}
        if outcomes & {MISMATCH, INVALID}:
            return 1
        if self.entries and outcomes == {COULD_NOT_VERIFY}:
            return 3
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "mode": self.mode,
            "dry_run": self.dry_run,
            "results": [e.to_dict() for e in self.entries],
            "summary": {w: s.to_dict() for w, s in self.summary().items()},
            "exit_code": self.exit_code,
        }


def run_audit(
    board: Board,
    pool: BackendPool,
    plan: AuditPlan,
    *,
    mode: str = "auto",
    record: bool = True,
    push: bool = True,
    on_entry: Callable[[AuditEntry], None] | None = None,
) -> AuditReport:
    """Verify each selected completion (recording attestations unless told not to); one failure never stops it."""
    from wl_infer.verify import verify_item

    report = AuditReport(plan, mode, dry_run=False)
    for cand in plan.selected:
        try:
            v = verify_item(board, cand.item_id, pool, mode=mode, record=record, push=push)
            entry = AuditEntry(cand, v.verdict, v, v.reason)
        except BoardError as e:  # CannotVerify, a backend that is missing here, a board that moved
            entry = AuditEntry(cand, COULD_NOT_VERIFY, None, str(e))
        report.entries.append(entry)
        if on_entry is not None:
            on_entry(entry)
    return report


# --- command line -------------------------------------------------------------------------------------------
def _selection_table(plan: AuditPlan) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table("item", "worker", "status", "score", title="Selected for audit", title_justify="left")
    for c in plan.selected:
        table.add_row(Text(c.item_id), Text(c.worker), Text(c.status), Text(f"{c.score:.4f}"))
    return table


def _summary_table(report: AuditReport) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table("worker", "checked", "verified", "mismatched", "invalid", "could not verify")
    for worker, s in report.summary().items():
        bad = s.mismatched + s.invalid
        table.add_row(
            Text(worker, style="red" if bad else ""),
            *(Text(str(n)) for n in (s.checked, s.verified, s.mismatched, s.invalid, s.could_not_verify)),
        )
    return table


def _entry_line(e: AuditEntry) -> None:
    c = e.candidate
    mode = f" ({e.verdict.mode})" if e.verdict else ""
    if e.outcome == VERIFIED:
        say(f"  ✓ {c.item_id}  {c.worker}  VERIFIED{mode}", "green")
        return
    style = "yellow" if e.outcome == COULD_NOT_VERIFY else "red"
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
