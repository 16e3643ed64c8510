"""What the pages show, derived once per board head from the adapter's records (no I/O here).

A new head rebuilds the rows (cheap: the adapter reuses unchanged items' facts), and the history grows by the
new commits only, so a 10,000-item board costs its parse once and each page is a filter over a list.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wl_infer.web.data import INFERENCE, Event, Facts, State

VERDICTS = ("VERIFIED", "MISMATCH", "INVALID")
AWAITING = "awaiting"
SORTS = ("priority", "newest", "updated")


def parse_at(value: Any) -> datetime | None:
    """An RFC 3339 UTC time from the board, or None for anything else (board text is untrusted)."""
    if not isinstance(value, str) or not value.endswith("Z") or len(value) > 40:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@dataclass
class Badge:
    verifier: str
    verdict: str
    signed: bool
    current: bool  # attests the item's live completion (not one since rejected)


@dataclass
class Row:
    """One item as the board page lists it."""

    facts: Facts
    model: str | None
    backend: str | None
    worker: str | None
    tokens: int | None
    badges: list[Badge]
    outcome: str | None  # VERIFIED / MISMATCH / INVALID / awaiting, for inference results; None otherwise
    haystack: str

    @property
    def item(self) -> Any:
        return self.facts.item


def badges(facts: Facts) -> list[Badge]:
    comp_id = facts.completion.id if facts.completion else None
    out = []
    for verifier, att in sorted(facts.attestations.items()):
        verdict = att.get("verdict")
        verdict = verdict if verdict in VERDICTS else "?"
        current = comp_id is not None and att.get("completion_id") == comp_id
        out.append(Badge(verifier, verdict, facts.signed.get(verifier, False), current))
    return out


def outcome(facts: Facts, items_badges: list[Badge]) -> str | None:
    """The verdict that counts: signed attestations of the live completion by rigs other than its worker.

    Any MISMATCH outweighs an INVALID, which outweighs a VERIFIED; none at all is `awaiting`.
    """
    if facts.item.type != INFERENCE or facts.completion is None:
        return None
    if facts.evidence is None:
        return "INVALID"
    worker = facts.completion.completed_by
    seen = {b.verdict for b in items_badges if b.signed and b.current and b.verifier != worker}
    for verdict in ("MISMATCH", "INVALID", "VERIFIED"):
        if verdict in seen:
            return verdict
    return AWAITING


def make_row(facts: Facts) -> Row:
    item = facts.item
    job = facts.job
    worker = facts.completion.completed_by if facts.completion else None
    b = badges(facts)
    model = job.model if job else None
    hay = " ".join(x for x in (item.id, item.title, item.posted_by, item.claimed_by or "", worker or "",
                               model or "", item.project, " ".join(item.tags)) if x).lower()
    return Row(facts, model, job.backend if job else None, worker, facts.tokens, b, outcome(facts, b), hay)


@dataclass
class Filters:
    status: str = ""
    type: str = ""
    model: str = ""
    worker: str = ""
    mine: bool = False
    q: str = ""
    sort: str = "priority"

    def to_query(self) -> dict[str, str]:
        out = {k: v for k, v in (("status", self.status), ("type", self.type), ("model", self.model),
                                  ("worker", self.worker), ("q", self.q)) if v}
        if self.mine:
            out["mine"] = "1"
        if self.sort != "priority":
            out["sort"] = self.sort
        return out


def canary_of(raw: Any) -> dict[str, Any] | None:
    """The fields of a rig's canary record that the pages show, each checked (rig records are untrusted)."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {k: raw.get(k) if isinstance(raw.get(k), str) else None for k in ("at", "backend", "model")}
    out["stable"] = raw.get("stable") is True
    diverging = raw.get("diverging")
    out["diverging"] = [str(d) for d in diverging[:20]] if isinstance(diverging, list) else []
    return out


@dataclass
class RigStats:
    handle: str
    address: str
    display_name: str
    completed: int = 0
    verified: int = 0
    mismatched: int = 0
    invalid: int = 0
    awaiting: int = 0
    tokens: int = 0
    attested: int = 0  # verifications this rig made
    claimed_now: int = 0
    canary: dict[str, Any] | None = None
    registered: bool = True

    @property
    def canary_status(self) -> str:
        if not isinstance(self.canary, dict):
            return "none"
        return "stable" if self.canary.get("stable") is True else "diverging"

    def to_dict(self) -> dict[str, Any]:
        return {
            "handle": self.handle, "address": self.address, "display_name": self.display_name,
            "registered": self.registered, "completed": self.completed, "verified": self.verified,
            "mismatched": self.mismatched, "invalid": self.invalid, "awaiting_verification": self.awaiting,
            "tokens_generated": self.tokens, "attestations_made": self.attested, "claimed_now": self.claimed_now,
            "canary_status": self.canary_status, "canary": self.canary,
        }


@dataclass
class Index:
    state: State
    rows: list[Row]
    by_id: dict[str, Row]
    history: dict[str, list[Event]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, state: State, previous: Index | None) -> Index:
        reuse = previous.by_id if previous is not None else {}
        rows = [
            r if (r := reuse.get(i)) is not None and r.facts is f and not (state.rigs_changed and f.attestations)
            else make_row(f)
            for i, f in state.facts.items()
        ]
        rows.sort(key=lambda r: (r.item.priority, r.item.created_at, r.item.id))
        if previous is None or state.rewritten:
            events = list(state.new_events)
        else:
            events = previous.events + state.new_events
        history: dict[str, list[Event]] = defaultdict(list)
        seen: set[tuple[str, str, str, str]] = set()
        for e in events:
            key = (e.item_id or "", e.op, e.by, e.at)
            if e.item_id and key not in seen:  # a lane claim seen live, then again as the claim its done carried
                seen.add(key)
                history[e.item_id].append(e)
        models = sorted({r.model for r in rows if r.model})
        workers = sorted({w for r in rows for w in (r.worker, r.item.claimed_by) if w})
        return cls(state, rows, {r.item.id: r for r in rows}, dict(history), events, models, workers)

    # --- the board page ---------------------------------------------------------------------------
    def select(self, f: Filters, me: str | None) -> list[Row]:
        rows = self.rows
        if f.status:
            rows = [r for r in rows if r.item.status == f.status]
        if f.type:
            rows = [r for r in rows if r.item.type == f.type]
        if f.model:
            rows = [r for r in rows if r.model == f.model]
        if f.worker:
            rows = [r for r in rows if f.worker in (r.worker, r.item.claimed_by)]
        if f.mine:
            rows = [r for r in rows if me is not None and me in (r.item.posted_by, r.item.claimed_by, r.worker)]
        if f.q:
            words = f.q.lower().split()
            rows = [r for r in rows if all(w in r.haystack for w in words)]
        if f.sort == "newest":
            rows = sorted(rows, key=lambda r: (r.item.created_at, r.item.id), reverse=True)
        elif f.sort == "updated":
            rows = sorted(rows, key=lambda r: (r.item.updated_at, r.item.id), reverse=True)
        return rows

    def counts(self) -> Counter[str]:
        return Counter(r.item.status for r in self.rows)

    # --- rigs ---------------------------------------------------------------------------------------
    def leaderboard(self) -> list[RigStats]:
        stats: dict[str, RigStats] = {}
        for handle, rig in self.state.rigs.items():
            stats[handle] = RigStats(handle, rig.address, rig.display_name, canary=canary_of(rig.extra.get("canary")))

        def get(handle: str) -> RigStats:
            if handle not in stats:  # history names a rig the board no longer registers
                stats[handle] = RigStats(handle, "", "", registered=False)
            return stats[handle]

        for r in self.rows:
            if r.item.status == "claimed" and r.item.claimed_by:
                get(r.item.claimed_by).claimed_now += 1
            for b in r.badges:
                if b.signed:
                    get(b.verifier).attested += 1
            if r.outcome is None or r.worker is None:
                continue
            s = get(r.worker)
            s.completed += 1
            s.tokens += r.tokens or 0
            key = {"VERIFIED": "verified", "MISMATCH": "mismatched", "INVALID": "invalid"}.get(r.outcome, "awaiting")
            setattr(s, key, getattr(s, key) + 1)
        return sorted(stats.values(), key=lambda s: (-s.verified, -s.completed, s.handle))

    # --- the dashboard --------------------------------------------------------------------------------
    def hourly(self, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
        """Jobs posted / completed / verified and verdicts per hour over the last `hours` hours of activity."""
        now = now or datetime.now(UTC)
        times = [t for t in (parse_at(e.at) for e in self.events) if t is not None]
        end = now if not times or max(times) > now - timedelta(hours=hours) else max(times)
        end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=hours)
        labels = [(start + timedelta(hours=i)).strftime("%H:00") for i in range(hours)]
        series = {k: [0] * hours for k in ("posted", "completed", "verified", *VERDICTS)}
        types = {r.item.id: r.item.type for r in self.rows}
        for e in self.events:
            t = parse_at(e.at)
            if t is None or not start <= t < end:
                continue
            slot = int((t - start).total_seconds() // 3600)
            if e.op == "post" and e.args.get("type") == INFERENCE:
                series["posted"][slot] += 1
            elif e.op == "done" and types.get(e.item_id or "") == INFERENCE:
                series["completed"][slot] += 1
            elif e.op == "attest":
                record = e.args.get("record")
                verdict = record.get("verdict") if isinstance(record, dict) else None
                if verdict in VERDICTS:
                    series[str(verdict)][slot] += 1
                    if verdict == "VERIFIED":
                        series["verified"][slot] += 1
        return {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "hours": hours, "labels": labels, "series": series}

    def per_model(self) -> list[dict[str, Any]]:
        """Jobs, completions, tokens and reported tokens/s per model."""
        acc: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if not r.model:
                continue
            m = acc.setdefault(r.model, {"model": r.model, "jobs": 0, "completed": 0, "tokens": 0, "rates": []})
            m["jobs"] += 1
            if r.outcome is not None:
                m["completed"] += 1
                m["tokens"] += r.tokens or 0
                env = r.facts.evidence.envelope if r.facts.evidence else None
                rate = env.get("tokens_per_s") if isinstance(env, dict) else None
                if isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < 1e7:
                    m["rates"].append(float(rate))
        out = []
        for m in sorted(acc.values(), key=lambda m: -m["tokens"]):
            rates = m.pop("rates")
            m["tokens_per_s"] = round(sum(rates) / len(rates), 1) if rates else None
            out.append(m)
        return out
