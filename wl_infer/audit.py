"""Spot-check audits: verify a random share of completions, chosen so that workers cannot predict it.

Selection is a pure function of the board's head commit (read after a fetch) and the item id: an item is
audited iff `sha256(head_hex + ":" + item_id)`, read as a fraction of 2**64, is below the rate. A worker
cannot know it when submitting, because every later commit moves the head; anyone holding the same head
reproduces the selection exactly, so an audit can itself be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from board.api import BoardError, refresh_if_online
from wl_infer.attestations import check_attestation
from wl_infer.errors import InferError
from wl_infer.outcomes import AuditOutcome

if TYPE_CHECKING:  # the board and the engines load only when a command runs (`wl --help` stays fast)
    from board.api import Board, TreeView
    from wl_infer.jobs import BackendPool
    from wl_infer.verify import VerifyResult

AUDITABLE_STATUSES = ("in_review", "completed")


def selection_score(seed: str, item_id: str) -> float:
    """Where this item falls in [0, 1) for this seed: the first 64 bits of sha256(seed:item_id)."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


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
        if mine is not None and mine.get("completion_id") == comp.id and check_attestation(view, item.id, me, mine).valid:
            attested.append(item.id)
            continue
        eligible.append(Candidate(item.id, comp.id, comp.completed_by, item.status))
    return eligible, sorted(own), sorted(attested)


def plan_audit(board: Board, rate: float, limit: int | None = None, *, refresh: bool = True) -> AuditPlan:
    """Fetch, fix the seed to the head commit, and pick the completions to check."""
    if not 0.0 <= rate <= 1.0:
        raise InferError(f"audit rate must be in [0, 1], not {rate}")
    # offline, the local head still gives a reproducible seed (reported as not refreshed)
    refreshed = refresh and refresh_if_online(board)
    seed = board.head().decode("ascii")
    me = board.require_handle()
    eligible, own, attested = candidates(board.view(), me)
    by_id = {c.item_id: Candidate(c.item_id, c.completion_id, c.worker, c.status, selection_score(seed, c.item_id))
             for c in eligible}  # fmt: skip
    scored = sorted(by_id.values(), key=lambda c: (c.score, c.item_id))
    chosen = select(seed, by_id, rate)
    kept = chosen if limit is None else chosen[:limit]
    return AuditPlan(seed, rate, limit, refreshed, scored, [by_id[i] for i in kept], own, attested,
                     len(chosen) - len(kept))  # fmt: skip


@dataclass
class AuditEntry:
    candidate: Candidate
    outcome: AuditOutcome
    verdict: VerifyResult | None = None
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

    def add(self, outcome: AuditOutcome) -> None:
        self.checked += 1
        key = outcome.key
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
        if outcomes & {AuditOutcome.MISMATCH, AuditOutcome.INVALID}:
            return 1
        if self.entries and outcomes == {AuditOutcome.COULD_NOT_VERIFY}:
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
            entry = AuditEntry(cand, AuditOutcome(v.verdict), v, v.reason)
        except BoardError as e:  # CannotVerify, a backend that is missing here, a board that moved
            entry = AuditEntry(cand, AuditOutcome.COULD_NOT_VERIFY, None, str(e))
        report.entries.append(entry)
        if on_entry is not None:
            on_entry(entry)
    return report
