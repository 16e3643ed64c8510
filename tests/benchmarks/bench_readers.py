"""What robust reading costs: listing a 10,000-item board with and without crafted entries, and sanitising.

Run: .venv/bin/python tests/benchmarks/bench_readers.py [--items N] [--bad B] [--runs R]

Measures (median of R runs, wall clock, in-process): `TreeView.items()` with a cold parse cache and a warm
one, on an honest board and after a participant pushed B crafted entries (gitlinks, symlinks, bad JSON, bad
times) with git plumbing; and `board.text.sanitize` per title, clean ASCII and full of escape sequences.
Everything runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the helpers

from bench_board import fill_board  # noqa: E402
from hostile_git import GITLINK, SYMLINK, Mallory  # noqa: E402

from board.service import create_commons  # noqa: E402
from board.store import MAIN, Store  # noqa: E402
from board.text import sanitize  # noqa: E402
from board.view import TreeView  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def listing(commons: Path, cache: Path, runs: int) -> tuple[float, float, int, int]:
    store = Store(commons)
    try:
        head = store.ref(MAIN)
        assert head is not None
        tree = store.tree_id(head)
        cold = median_ms(lambda: TreeView(store, tree, cache).items(), runs, lambda: cache.unlink(missing_ok=True))
        TreeView(store, tree, cache).items()
        warm = median_ms(lambda: TreeView(store, tree, cache).items(), runs)
        view = TreeView(store, tree, cache)
        return cold, warm, len(view.items()), len(view.skipped)
    finally:
        store.close()


def crafted(mallory: Mallory, n: int) -> dict[str | bytes, tuple[str, str] | None]:
    """n bad entries spread over the buckets: a quarter each of gitlinks, symlinks, bad JSON and bad times."""
    bad_json = mallory.file(b'{"id": ')
    link = (SYMLINK, mallory.blob(b"../../board.json"))
    out: dict[str | bytes, tuple[str, str] | None] = {}
    for i in range(n):
        item_id = f"w-{i % 256:02x}{i:08x}"
        kind = i % 4
        if kind == 0:
            entry = (GITLINK, f"{i + 1:040x}")
        elif kind == 1:
            entry = link
        elif kind == 2:
            entry = bad_json
        else:
            entry = mallory.file(
                b'{"id": "%s", "title": "t", "posted_by": "m", "created_at": "2026-99-99T99:99:99Z", '
                b'"updated_at": "2026-01-01T00:00:00Z"}' % item_id.encode()
            )
        out[f"wanted/{item_id[2:4]}/{item_id}.json"] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--bad", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        commons = root / "commons.git"
        create_commons(commons, "bench")
        fill_board(commons, args.items, "alice")
        rows = [("honest", *listing(commons, root / "cache.json", args.runs))]
        mallory = Mallory(commons, root / "mallory.git")
        mallory.push(crafted(mallory, args.bad), "crafted entries")
        rows.append((f"+{args.bad} crafted", *listing(commons, root / "cache2.json", args.runs)))
    print(f"TreeView.items() on {args.items} items, median of {args.runs} runs")
    print(f"{'board':<16} {'cold ms':>9} {'warm ms':>9} {'items':>7} {'skipped':>8}")
    for name, cold, warm, n, skipped in rows:
        print(f"{name:<16} {cold:>9.1f} {warm:>9.1f} {n:>7} {skipped:>8}")
    clean = [f"bench item number {i} for the board" for i in range(10_000)]
    hostile = [f"\x1b]0;t{i}\x07\x1b[2J title \u202e{i}\r" for i in range(10_000)]
    for name, titles in (("clean ASCII", clean), ("escape-laden", hostile)):
        ms = median_ms(lambda titles=titles: [sanitize(t) for t in titles], args.runs)  # type: ignore[misc]
        print(f"sanitize, {name:<13} {ms * 1000 / len(titles):7.2f} µs per title")


if __name__ == "__main__":
    main()
