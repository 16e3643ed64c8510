"""Ledger benchmarks on a 10,000-item board with over 20,000 signed commits of history.

Run: .venv/bin/python tests/benchmarks/bench_ledger.py [--items N] [--runs R]

Builds the board once, in-process (each item posted and claimed as signed operations, like `--no-push`
commits) and caches it under /tmp/wl-bench-ledger-<N>; reruns reuse it. Measures (wall clock):
- the one-time validation of the whole history from its root (no cache);
- the incremental validation cost of one new commit (median over R commits);
- `Board.mutate(claim)` pushed to a git daemon on that board (median of R), and how much of it is
  validation (validating the fetched commit plus checking our own before the push).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the remotes helpers

from remotes import GitDaemon, have_git_daemon  # noqa: E402

from board.home import Home  # noqa: E402
from board.ids import new_item_id, utcnow  # noqa: E402
from board.keys import load_private_key  # noqa: E402
from board.ledger import Advance, Ledger  # noqa: E402
from board.ops import Op  # noqa: E402
from board.publish import Chain  # noqa: E402
from board.service import Board, create_commons, join  # noqa: E402
from board.store import MAIN, NewObjects, Store  # noqa: E402


def build(root: Path, items: int) -> tuple[Path, Path]:
    """A commons with `items` items, each posted and claimed (2 signed commits each), and alice's home."""
    commons, home = root / "commons.git", root / "home-alice"
    if (root / "built").exists():
        return commons, home
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    create_commons(commons, "bench")
    join(Home(home), str(commons), "alice")[0].close()
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        state, _ = Ledger(store, root / "scratch.json", use_ref=False).advance(head, save=False)
        chain = Chain.on(store, state, [load_private_key(home)], head)
        t0 = time.perf_counter()
        for i in range(items):
            iid = new_item_id(f"job {i}", utcnow())
            chain.add(Op(op="post", by="alice", at="", id=iid, args={"title": f"job {i}", "type": "inference"}))
            chain.new = NewObjects()
            chain.add(Op(op="claim", by="alice", at="", id=iid, args={"lease_seconds": 600}))
            chain.new = NewObjects()
            if i % 1000 == 999:
                store.objects.pack_loose_objects()
                print(f"  built {i + 1} items ({time.perf_counter() - t0:.0f} s)", flush=True)
        assert chain.head is not None
        store.objects.pack_loose_objects()
        store.force_ref(MAIN, chain.head)
    finally:
        store.close()
    (root / "built").touch()
    return commons, home


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    root = Path(f"/tmp/wl-bench-ledger-{args.items}")
    commons, home = build(root, args.items)
    store = Store(commons)
    head = store.ref(MAIN)
    assert head is not None
    n = len(store.first_parent_chain(head, None))
    print(f"board: {args.items} items, {n} commits")

    cache = root / "full.json"
    cache.unlink(missing_ok=True)
    t0 = time.perf_counter()
    state, found = Ledger(store, cache, use_ref=False).advance(head, save=False)
    full = time.perf_counter() - t0
    assert not found.bad, found.bad[:1]
    print(f"one-time validation of the whole history: {full:.2f} s ({full / n * 1000:.3f} ms/commit)")

    ledger = Ledger(store, cache, use_ref=False)
    chain = Chain.on(store, state, [load_private_key(home)], head)
    costs = []
    for i in range(args.runs):
        iid = new_item_id(f"extra {i}", utcnow())
        chain.add(Op(op="post", by="alice", at="", id=iid, args={"title": f"extra {i}"}))
        chain.new = NewObjects()
        assert chain.head is not None
        t0 = time.perf_counter()
        ledger.step(state, chain.head, Advance())
        costs.append((time.perf_counter() - t0) * 1000)
    assert chain.head is not None
    store.force_ref(MAIN, chain.head)
    store.close()
    print(f"validation of one new commit: median {statistics.median(costs):.2f} ms (min {min(costs):.2f})")

    if not have_git_daemon():
        print("git daemon missing: claim-over-daemon figures skipped")
        return
    daemon = GitDaemon(commons.parent)
    daemon.start()
    try:
        Home(home).set_config("remote", daemon.url("commons.git"))
        totals, validation = [], []
        with Board(Home(home)) as board:
            board.refresh()
            original = board.ledger.advance

            spent: list[float] = []

            def timed(*a: object, **k: object) -> object:
                t = time.perf_counter()
                try:
                    return original(*a, **k)  # type: ignore[arg-type]
                finally:
                    spent.append(time.perf_counter() - t)

            board.ledger.advance = timed  # type: ignore[method-assign]
            check = board._self_check

            def timed_check(*a: object) -> object:
                t = time.perf_counter()
                try:
                    return check(*a)  # type: ignore[arg-type]
                finally:
                    spent.append(time.perf_counter() - t)

            board._self_check = timed_check  # type: ignore[method-assign]
            for i in range(args.runs):
                iid = new_item_id(f"claimed {i}", utcnow())
                board.mutate(board.new_op("post", iid, title=f"claimed {i}"))
                spent.clear()
                t0 = time.perf_counter()
                board.mutate(board.new_op("claim", iid, lease_seconds=600))
                totals.append(time.perf_counter() - t0)
                validation.append(sum(spent))
        med_total, med_val = statistics.median(totals) * 1000, statistics.median(validation) * 1000
        print(f"claim pushed to git daemon: median {med_total:.1f} ms, of which validation {med_val:.2f} ms "
              f"(+{med_val / max(med_total - med_val, 1e-9) * 100:.1f} % over the same claim without it)")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
