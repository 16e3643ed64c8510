"""The BOUNTY column of `wl browse` (entry point ``wl.browse_columns``): the amount each listed job's poster
recorded, and how far along it is, from the item record alone — never the chain (browse stays offline and
loads no chain library). The record is the poster's claim: `wl infer status ID` and `wl chain status ID`
check it against the contract.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def _span(seconds: float) -> str:
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m"


def _epoch(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def bounty_column(items: Sequence[Any]) -> dict[str, str]:
    """``{item id: "0.01 ETH, 23h10m left"}`` for the listed inference items that carry a bounty record.

    open/claimed: time to the deadline (after it, the poster may refund); in_review/completed: the challenge
    window, counted from the result's publication (the worker submits on chain just before it: ≈);
    a malformed record says so."""
    if not any(getattr(item, "type", None) == "inference" for item in items):
        return {}  # nothing to say: the bounty code (and the board service it imports) stays unloaded
    from wl_infer.bounty_board import BadBounty, bounty_of, format_wei

    now = time.time()
    out: dict[str, str] = {}
    for item in items:
        if getattr(item, "type", None) != "inference":
            continue
        try:
            rec = bounty_of(item)
        except BadBounty:
            out[item.id] = "bad record"
            continue
        if rec is None:
            continue
        amount = format_wei(rec.amount)
        if item.status in ("open", "claimed"):
            left = rec.deadline - now
            out[item.id] = f"{amount}, {_span(left)} left" if left > 0 else f"{amount}, past deadline"
        elif item.status in ("in_review", "completed"):
            since = _epoch(item.updated_at)
            window = None if since is None else since + rec.window - now
            note = "" if window is None else f", window ≈{_span(window)}" if window > 0 else ", window over"
            out[item.id] = amount + note
        else:
            out[item.id] = amount
    return out
