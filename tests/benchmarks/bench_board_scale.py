"""Board-size benchmark (issue 15): browse, join, show and claim at 1,000 / 10,000 / 100,000 items.

Run: .venv/bin/python tests/benchmarks/bench_board_scale.py [--sizes 1000,10000,100000] [--runs 5] [--wl PATH]

For each size two boards are built, served by `git daemon` on 127.0.0.1:
  (a) every item live (open), and
  (b) the same number posted of which all but 2,000 (a fifth, on smaller boards) are archived (completed
      60 days ago).
Boards are written straight into git as a wl-board/1 tree (posting 100,000 signed operations would take an
hour and measure the ledger, see bench_ledger.py), which the first rig's join checkpoints into wl-board/2 like
any old board; the archived items of (b) sit in `archive/` of that tree from the start (the archive rule itself
is covered by tests/test_archive.py). Then, as processes, median of --runs runs each:
  `wl browse --limit 20` cold (no index, no parse cache) and warm, `wl join` (fresh home, over git daemon),
  `wl show ID` (a live item; on (b) also an archived one), `wl status`, `wl claim ID --no-push` (a different open
  item each run).
Each figure is the median wall time and the median CPU time (user + system) of the `wl` process.
`--wl PATH` runs the commands with another `wl` (e.g. main's, for the before figures; main cannot read (b)).
The commons is packed by `git repack` (deltas included, as `git gc` leaves a served repository); the commands
run with bytecode caching on (PYTHONDONTWRITEBYTECODE is dropped), as users run them. Everything runs in a
temporary folder; the daemon is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the remotes helpers

from remotes import GIT, GitDaemon, have_git_daemon  # noqa: E402

from board import layout  # noqa: E402
from board.ids import fmt_time, utcnow  # noqa: E402
from board.records import Item, dumps  # noqa: E402
from board.store import MAIN, NewObjects, Store  # noqa: E402

ARCHIVE_KEEP = 2000
GOALS = {"browse warm": 0.150, "browse cold": 1.0, "join": 1.0}


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # start-up as users get it


def sh(wl: str, args: list[str], home: Path) -> str:
    p = subprocess.run([wl, *args], env={**ENV, "WL_HOME": str(home)}, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"wl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p.stdout


def item_id(n: int) -> str:
    return f"w-{n * 2654435761 % (1 << 40):010x}"  # spread over the 256 buckets, distinct for n < 2^32


def build(path: Path, n: int, archived: int) -> tuple[list[str], list[str]]:
    """A wl-board/1 commons: n items, the first `archived` of them completed long ago and under archive/."""
    store = Store.init_bare(path)
    try:
        now, old = fmt_time(utcnow()), fmt_time(utcnow() - timedelta(days=60))
        meta = {"format": "wl-board/1", "name": "scale", "board_id": os.urandom(8).hex(), "created_at": old}
        head = store.make_commit(None, {layout.BOARD: dumps(meta)}, "wl: create board\n", "wl", NewObjects())
        changes: dict[str, bytes | None] = {}
        live: list[str] = []
        gone: list[str] = []
        for i in range(n):
            iid = item_id(i + 1)
            done = i < archived
            when = old if done else now
            item = Item(id=iid, title=f"scale item {i}", description=f"generated item {i} for the scale benchmark",
                        posted_by="poster", created_at=when, updated_at=when, priority=i % 5, tags=["bench"],
                        project=f"p{i % 7}", status="completed" if done else "open")
            path_ = layout.archive_item_path(iid) if done else layout.item_path(iid)
            changes[path_] = item.encode()
            (gone if done else live).append(iid)
        head = store.make_commit(head, changes, f"wl: {n} items\n", "poster", NewObjects())
        store.force_ref(MAIN, head)
    finally:
        store.close()
    assert GIT is not None  # packed by git, deltas included, as `git gc` leaves a served commons
    subprocess.run([GIT, "-C", str(path), "repack", "-adq"], check=True)
    subprocess.run([GIT, "-C", str(path), "prune-packed"], check=True)
    (path / "git-daemon-export-ok").touch()
    return live, gone


def measure(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None) -> tuple[float, float]:
    """Median wall and median CPU (the `wl` process's user + system time) in ms: on a loaded machine the CPU
    figure is the one that says what the command costs."""
    walls, cpus = [], []
    for _ in range(runs):
        if setup is not None:
            setup()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def run_board(
    wl: str, tmp: Path, daemon: GitDaemon, n: int, archived: int, runs: int, label: str
) -> dict[str, tuple[float, float]]:
    from board.home import Home
    from board.service import join

    name = f"{label}-{n}.git"
    t = time.perf_counter()
    live, gone = build(daemon.base / name, n, archived)
    url = daemon.url(name)
    first = Home(tmp / f"first-{name}")
    join(first, url, "bench")[0].close()  # the checkpoint into wl-board/2
    print(f"  built {label} board of {n} items ({len(live)} live) in {time.perf_counter() - t:.1f} s", flush=True)
    out: dict[str, tuple[float, float]] = {}
    homes = iter(range(10_000))

    def fresh_join() -> None:
        k = next(homes)
        sh(wl, ["join", url, "--handle", f"j{k}"], tmp / f"join-{name}-{k}")

    out["join"] = measure(fresh_join, runs)
    home = tmp / f"join-{name}-0"
    cache = home / "cache"

    def cold() -> None:
        for f in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "items.json"):
            (cache / f).unlink(missing_ok=True)

    browse = ["browse", "--limit", "20"]
    out["browse cold"] = measure(lambda: sh(wl, browse, home), runs, cold)
    sh(wl, browse, home)
    out["browse warm"] = measure(lambda: sh(wl, browse, home), runs)
    out["show"] = measure(lambda: sh(wl, ["show", live[len(live) // 2]], home), runs)
    out["status"] = measure(lambda: sh(wl, ["status"], home), runs)
    if gone:
        out["show archived"] = measure(lambda: sh(wl, ["show", gone[len(gone) // 2]], home), runs)
    pick = iter(live)
    out["claim --no-push"] = measure(lambda: sh(wl, ["claim", next(pick), "--no-push"], home), runs)
    out["browse after claims"] = measure(lambda: sh(wl, browse, home), runs)
    for key, (wall, cpu) in out.items():
        goal = f"   (goal ≤ {GOALS[key] * 1000:.0f} ms)" if key in GOALS and n >= 100_000 else ""
        print(f"    {label:<9} {n:>7}  {key:<20} {wall:8.0f} ms wall {cpu:8.0f} ms CPU{goal}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--wl", default=str(Path(sys.executable).with_name("wl")))
    ap.add_argument("--live-only", action="store_true", help="Only boards (a) (what main can read).")
    args = ap.parse_args()
    if not have_git_daemon():
        sys.exit("bench_board_scale: git daemon is needed")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"bench_board_scale: {sizes}, median of {args.runs}, wl {args.wl}, load {os.getloadavg()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its daemon
    tmp = Path(tempfile.mkdtemp(prefix="wl-scale-"))
    (tmp / "served").mkdir()
    daemon = GitDaemon(tmp / "served")
    daemon.start()
    table: list[tuple[str, int, dict[str, tuple[float, float]]]] = []
    try:
        for n in sizes:
            table.append(("live", n, run_board(args.wl, tmp, daemon, n, 0, args.runs, "live")))
            if not args.live_only:
                kept = min(ARCHIVE_KEEP, n // 5)
                table.append(("archived", n, run_board(args.wl, tmp, daemon, n, n - kept, args.runs, "archived")))
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = sorted({k for _, _, row in table for k in row}, key=lambda k: list(table[0][2]).index(k)
                  if k in table[0][2] else 99)
    print("\n| board | items | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for label, n, row in table:
        cells = " | ".join(f"{row[k][0]:.0f} ({row[k][1]:.0f})" if k in row else "–" for k in keys)
        print(f"| {label} | {n:,} | {cells} |")
    print(f"(ms wall (ms CPU of the wl process), medians of {args.runs}; load average at the end {os.getloadavg()})")


if __name__ == "__main__":
    main()
