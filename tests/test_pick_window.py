"""Which items a worker tries first (wl_infer.automation.runnable_items): highest priority and oldest, with the
head shuffled so concurrent workers spread out — over 32 items, or over twice the claims held when more are,
so a commons with many workers claiming at once does not have them all racing for the same 32."""

from __future__ import annotations

import random
from datetime import timedelta

from board.ids import fmt_time, utcnow
from board.records import Item
from wl_infer.automation import SHUFFLE_WINDOW, runnable_items


def _items(open_n: int, claimed_n: int) -> list[Item]:
    now, t0 = utcnow(), utcnow() - timedelta(hours=1)
    out = []
    for k in range(open_n + claimed_n):
        held = k < claimed_n
        out.append(Item(id=f"w-{k:010x}", title=f"job {k}", posted_by="poster", type="inference",
                        created_at=fmt_time(t0 + timedelta(seconds=k)), updated_at=fmt_time(now),
                        status="claimed" if held else "open", claimed_by="other" if held else None,
                        claim_expires_at=fmt_time(now + timedelta(minutes=30)) if held else None))  # fmt: skip
    return out


def _first_picks(items: list[Item], runs: int = 400) -> set[int]:
    random.seed(7)
    order = {i.id: n for n, i in enumerate(sorted((i for i in items if i.status == "open"), key=lambda i: i.created_at))}
    return {order[next(runnable_items(items, utcnow(), set())).id] for _ in range(runs)}


def test_with_few_claims_held_workers_pick_among_the_oldest_32() -> None:
    picks = _first_picks(_items(300, 5))
    assert max(picks) < SHUFFLE_WINDOW and len(picks) > SHUFFLE_WINDOW // 2


def test_with_many_claims_held_the_window_grows_to_twice_their_number() -> None:
    picks = _first_picks(_items(300, 100))
    assert max(picks) >= SHUFFLE_WINDOW and max(picks) < 200
    assert len(picks) > 100  # spread over the wider head, not 32 items


def test_the_rest_follow_in_order_after_the_head() -> None:
    items = _items(100, 0)
    got = [i.id for i in runnable_items(items, utcnow(), set())]
    assert got[SHUFFLE_WINDOW:] == [i.id for i in items[SHUFFLE_WINDOW:]]
    assert sorted(got[:SHUFFLE_WINDOW]) == sorted(i.id for i in items[:SHUFFLE_WINDOW])
