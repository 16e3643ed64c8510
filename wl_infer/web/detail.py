"""One item in full, for its page and `/api/items/<id>`: the CLI's `infer status`/`show` records plus checks.

Built once per (head, item) and cached: the evidence's self-check recovers a signature, which is the slow
part of an item page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from wl_infer.web.data import INFERENCE, Event, output_hash
from wl_infer.web.index import Row, parse_at

SUMMARY_KEYS = (
    "backend", "engine", "model", "model_digest", "sampling.method", "sampling.temperature", "sampling.seed",
    "sampling.max_tokens", "runtime.n_ctx", "runtime.n_batch", "runtime.n_threads", "runtime.prompt_cache",
    "platform.machine", "platform.gpu", "wl_infer_version",
)


def flatten(d: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 4:
            out.update(flatten(v, key + ".", depth + 1))
        else:
            out[key] = v if isinstance(v, (str, int, float, bool)) or v is None else orjson.dumps(v).decode()
    return out


def lease_left(expires: str | None, now: datetime | None = None) -> str:
    t = parse_at(expires)
    if t is None:
        return ""
    left = (t - (now or datetime.now(UTC))).total_seconds()
    if left <= 0:
        return "expired"
    return ago_text(left) + " left"


def ago_text(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def event_summary(e: Event) -> str:
    a = e.args
    if e.op == "post":
        return f"posted ({a.get('type', 'feature')})"
    if e.op in ("claim", "renew"):
        lease = a.get("lease_seconds")
        return f"{e.op}ed" + (f" for {int(lease) // 60} min" if isinstance(lease, int) else "")
    if e.op == "done":
        try:
            ev = orjson.loads(a.get("evidence") or "")
            h = ev.get("output_hash") if isinstance(ev, dict) else None
        except (orjson.JSONDecodeError, TypeError):
            h = None
        return "submitted a result" + (f" {str(h)[:23]}…" if h else "")
    if e.op == "attest":
        rec = _obj(a, "record")
        return f"attested {rec.get('verdict', '?')} ({rec.get('mode', '?')})"
    if e.op == "anchor":
        anchor = _obj(a, "anchor")
        return f"anchored in tx {anchor.get('tx', '?')}"
    if e.op == "accept":
        return f"accepted (quality {a.get('quality', '?')})"
    return {"unclaim": "released the claim", "reject": "rejected the result", "close": "closed",
            "delete": "withdrew the item"}.get(e.op, e.op)


def event_dict(e: Event) -> dict[str, Any]:
    return {"commit": e.commit, "op": e.op, "by": e.by, "at": e.at, "id": e.item_id, "summary": event_summary(e)}


def claim_to_result_rate(events: list[Event], tokens: int | None) -> float | None:
    """Tokens per second from the last claim to the result's commit: a lower bound (it includes model load)."""
    claimed = done = None
    for e in events:
        if e.op == "claim":
            claimed, done = parse_at(e.at), None
        elif e.op == "done":
            done = parse_at(e.at)
    if not tokens or claimed is None or done is None:
        return None
    seconds = (done - claimed).total_seconds()
    return round(tokens / seconds, 1) if seconds >= 1 else None


def build(hub: Any, row: Row) -> dict[str, Any]:
    key = (hub.current.state.head, row.item.id)
    cached: dict[str, Any] | None = hub.item_cache.get(key)
    if cached is not None:
        return cached
    f = row.facts
    source = hub.source
    ev = f.evidence
    out: dict[str, Any] = {
        "item": f.item.to_dict(),
        "job": f.job.to_dict() if f.job else None,
        "job_error": f.job_error,
        "completion": f.completion.to_dict() if f.completion else None,
        "evidence": ev.to_dict() if ev else None,
        "evidence_error": f.evidence_error,
        "attestations": f.attestations,
        "signatures": dict(f.signed),
        "outcome": row.outcome,
        "history": [event_dict(e) for e in hub.current.history.get(f.item.id, [])],
    }
    output = problem = None
    if ev is not None:
        output, problem = source.output_of(ev)
    out["output"] = output
    out["output_error"] = problem
    out["output_hash_ok"] = output is not None and ev is not None and output_hash(output) == ev.output_hash
    out["evidence_check"] = None
    if f.item.type == INFERENCE and f.completion is not None:
        reason = source.self_check(f)
        out["evidence_check"] = {"ok": reason is None, "reason": reason}
    env = flatten(ev.envelope) if ev is not None and ev.envelope else {}
    out["envelope_flat"] = env
    out["envelope_summary"] = {k: env[k] for k in SUMMARY_KEYS if k in env}
    out["tokens"] = f.tokens
    rate = env.get("tokens_per_s")
    if not isinstance(rate, (int, float)) and isinstance(env.get("elapsed_s"), (int, float)) and f.tokens:
        rate = f.tokens / env["elapsed_s"] if env["elapsed_s"] > 0 else None
    out["tokens_per_s"] = round(float(rate), 1) if isinstance(rate, (int, float)) and rate else None
    out["tokens_per_s_estimate"] = None if out["tokens_per_s"] else claim_to_result_rate(
        hub.current.history.get(f.item.id, []), f.tokens)
    anchor = ev.extra.get("anchor") if ev is not None else None
    out["anchor"] = anchor if isinstance(anchor, dict) else None
    out["chain"] = source.chain()
    if len(hub.item_cache) > 512:
        hub.item_cache.clear()
    hub.item_cache[key] = out
    return out
