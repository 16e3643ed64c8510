"""Ledger benchmarks on a 10,000-item board with over 20,000 signed commits of history.

Run: .venv/bin/python tests/benchmarks/bench_ledger.py [--items N] [--runs R]

Builds the board once, in-process (each item posted and claimed as signed operations, like `--no-push`
commits) and caches it under /tmp/wl-bench-ledger-<N>; reruns reuse it. Measures (wall clock):
- the one-time validation of the whole history from its root (no cache);
- the incremental validation cost of one new commit (median over R commits);
- `Board.mutate(claim)` pushed to a git daemon on that board (median of R), and how much of it is
  validation (validating the fetched commit plus checking our own before the push).

With `--main DIR` (a checkout of the main branch, e.g. `git archive main | tar -x -C DIR`), it also times
the same claim end to end with this branch's code and with main's (no signatures, no validation) on a fresh
board of `--claim-items` items each, alternating the two in separate processes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--claim-loop":
    # A child process timing claims with the code in sys.argv[2] (main's checkout, or "" for this branch).
    if sys.argv[2]:
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, sys.argv[2])

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the remotes helpers

from remotes import GitDaemon, have_git_daemon  # noqa: E402

from board.home import Home  # noqa: E402
from board.ids import new_item_id, utcnow  # noqa: E402
from board.service import Board, create_commons, join  # noqa: E402
from board.store import MAIN, NewObjects, Store  # noqa: E402


def build(root: Path, items: int) -> tuple[Path, Path]:
    """A commons with `items` items, each posted and claimed (2 signed commits each), and alice's home."""
    from board.keys import load_private_key
    from board.ledger import Ledger
    from board.ops import Op
    from board.publish import Chain

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
        state, _ = Ledger(store, root / "scratch.json").advance(head, save=False)
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
        store.objects.repack()  # one pack, as `maintain()` leaves a rig's clone
    finally:
        store.close()
    (root / "built").touch()
    return commons, home


def main() -> None:
    from board.keys import load_private_key
    from board.ledger import Advance, Ledger
    from board.ops import Op
    from board.publish import Chain

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
    t0, c0 = time.perf_counter(), time.process_time()
    state, found = Ledger(store, cache).advance(head, save=False)
    full, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert not found.bad, found.bad[:1]
    print(f"one-time validation of the whole history: {full:.2f} s wall, {cpu:.2f} s CPU "
          f"({cpu / n * 1000:.3f} ms CPU/commit)")

    ledger = Ledger(store, cache)
    chain = Chain.on(store, state, [load_private_key(home)], head)
    costs, cpus = [], []
    for i in range(args.runs):
        iid = new_item_id(f"extra {i}", utcnow())
        chain.add(Op(op="post", by="alice", at="", id=iid, args={"title": f"extra {i}"}))
        chain.new = NewObjects()
        assert chain.head is not None
        t0, c0 = time.perf_counter(), time.process_time()
        ledger.step(state, chain.head, Advance())
        costs.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    assert chain.head is not None
    store.force_ref(MAIN, chain.head)
    store.close()
    print(f"validation of one new commit: median {statistics.median(costs):.2f} ms wall "
          f"(min {min(costs):.2f}), {statistics.median(cpus):.2f} ms CPU")

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


def claim_loop(items: int, runs: int) -> None:
    """Post `items` items on a fresh commons behind a git daemon, then time `runs` pushed claims."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        create_commons(base / "srv" / "commons.git", "claims")
        daemon = GitDaemon(base / "srv")
        daemon.start()
        try:
            join(Home(base / "home"), daemon.url("commons.git"), "alice")[0].close()
            with Board(Home(base / "home")) as board:
                ids = []
                for i in range(items):
                    iid = new_item_id(f"c {i}", utcnow())
                    board.mutate(board.new_op("post", iid, title=f"c {i}"))
                    ids.append(iid)
                times = []
                for iid in ids[:runs]:
                    t0 = time.perf_counter()
                    board.mutate(board.new_op("claim", iid, lease_seconds=600))
                    times.append(time.perf_counter() - t0)
        finally:
            daemon.stop()
    print(json.dumps(times))


def compare_main(main_dir: str, items: int, runs: int, rounds: int = 3) -> None:
    results: dict[str, list[float]] = {"branch": [], "main": []}
    for _ in range(rounds):
        for name, code in (("branch", ""), ("main", main_dir)):
            out = subprocess.run([sys.executable, __file__, "--claim-loop", code, str(items), str(runs)],
                                 capture_output=True, text=True, check=True).stdout
            results[name] += json.loads(out.strip().splitlines()[-1])
    b, m = statistics.median(results["branch"]) * 1000, statistics.median(results["main"]) * 1000
    print(f"claim pushed to git daemon, {items}-item board, median of {len(results['main'])}: "
          f"main {m:.1f} ms, this branch {b:.1f} ms ({(b / m - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--claim-loop":
        claim_loop(int(sys.argv[3]), int(sys.argv[4]))
    else:
        extra = argparse.ArgumentParser(add_help=False)
        extra.add_argument("--main")
        extra.add_argument("--claim-items", type=int, default=300)
        extra.add_argument("--only-compare", action="store_true")
        known, rest = extra.parse_known_args()
        sys.argv = [sys.argv[0], *rest]
        if not known.only_compare:
            main()
        if known.main:
            compare_main(known.main, known.claim_items, 20)
