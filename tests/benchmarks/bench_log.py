"""`wl log ID` on a board with a long history: the walk stops at the item's post, so its cost follows the age of
the item, not the size of the board.

Run: .venv/bin/python tests/benchmarks/bench_log.py [--commits N] [--runs R]

Builds a local board (no remote) with one item posted first, N further commits (posts, claims and unclaims of
other items) and one item posted last; then times (median of R runs, wall clock) the in-process history walk
for the oldest and the newest item, and `wl log ID --json` as a process for both. Everything runs in a
temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from board.cli.overview import history
from board.home import Home
from board.ids import new_item_id, utcnow
from board.service import Board, init_local

WL = str(Path(sys.executable).with_name("wl"))


def post(board: Board, title: str) -> str:
    item_id = new_item_id(title, utcnow())
    board.mutate(board.new_op("post", item_id, title=title, description="", type="feature", priority=2,
                              effort_level="medium", project="", tags=[]), push=False)
    return item_id


def build(home: Home, commits: int) -> tuple[str, str]:
    board = init_local(home, "bench")
    try:
        oldest = post(board, "the oldest item")
        made = 0
        while made < commits:
            other = post(board, f"filler {made}")
            board.mutate(board.new_op("claim", other, lease_seconds=600), push=False)
            board.mutate(board.new_op("unclaim", other), push=False)
            made += 3
        newest = post(board, "the newest item")
    finally:
        board.close()
    return oldest, newest


def median_of(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        start = time.perf_counter()
        oldest, newest = build(home, args.commits)
        print(f"built a board of ~{args.commits + 4} commits in {time.perf_counter() - start:.1f} s")
        rows = []
        for label, item in (("oldest (walks everything)", oldest), ("newest (stops at once)", newest)):
            with Board(home) as board:
                n = len(history(board, item))
                walk = median_of(lambda b=board, i=item: history(b, i), args.runs)
            proc = median_of(lambda i=item: subprocess.run([WL, "--home", str(home.path), "log", i, "--json"],
                                                           check=True, capture_output=True), args.runs)
            rows.append((label, n, walk, proc))
        print(f"{'item':<28} {'records':>7} {'walk (in-process)':>18} {'wl log --json':>14}")
        for label, n, walk, proc in rows:
            print(f"{label:<28} {n:>7} {walk * 1000:>15.1f} ms {proc * 1000:>11.1f} ms")


if __name__ == "__main__":
    main()
