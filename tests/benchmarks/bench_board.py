"""Board benchmarks on a 10,000-item board, against the git CLI doing the same on the same data.

Run: .venv/bin/python tests/benchmarks/bench_board.py [--items N] [--runs R]

Measures (median of R runs, wall clock): `wl show`, `wl browse --limit 20` (cold cache, then warm), a local
claim commit (`wl claim --no-push` as a process, and Board.mutate in-process), a claim pushed to a git-daemon
remote, and `wl --help`; the git CLI baselines are one-file `git add` + `git commit` in a non-bare clone of the
same board, and `git fetch` + `git push` to the same daemon. Also checks that an in-process commit costs the
same on a 1,000- and a 10,000-item board, and lists the slowest imports of `wl show` (python -X importtime).
Everything runs in a temporary folder; the daemon binds 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the remotes helpers

from remotes import GIT, GitDaemon, have_git_daemon  # noqa: E402

from board import layout  # noqa: E402
from board.home import Home  # noqa: E402
from board.ids import fmt_time, new_item_id, utcnow  # noqa: E402
from board.records import Item  # noqa: E402
from board.service import Board, create_commons, join  # noqa: E402
from board.store import MAIN, NewObjects, Store  # noqa: E402

WL = str(Path(sys.executable).with_name("wl"))


@dataclass
class Stat:
    name: str
    times: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


ROWS: list[Stat] = []


def timed(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None) -> list[float]:
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def sh(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def fill_board(commons: Path, n: int, poster: str) -> list[str]:
    """n open items written straight into one commit (posting 10,000 times would measure nothing useful)."""
    store = Store(commons)
    try:
        now = fmt_time(utcnow())
        changes: dict[str, bytes | None] = {}
        ids = []
        for i in range(n):
            item_id = new_item_id(f"bench item {i}", utcnow())
            item = Item(
                id=item_id,
                title=f"bench item {i}",
                description=f"generated item number {i} for the board benchmark",
                posted_by=poster,
                created_at=now,
                updated_at=now,
                priority=i % 5,
                tags=["bench"],
            )
            changes[layout.item_path(item_id)] = item.encode()
            ids.append(item_id)
        head = store.ref(MAIN)
        msg = f"bench: {n} items\n"
        commit = store.make_commit(head, changes, msg, poster, NewObjects())
        assert store.set_ref(MAIN, commit, head)
        store.objects.pack_loose_objects()
        return ids
    finally:
        store.close()


def make_rig(base: Path, url: str, handle: str) -> Home:
    home = Home(base / f"home-{handle}")
    board, _ = join(home, url, handle)
    board.close()
    return home


def wl_env(home: Home) -> dict[str, str]:
    return {**os.environ, "WL_HOME": str(home.path)}


def record(name: str, times: list[float], note: str = "") -> Stat:
    stat = Stat(name, times, note)
    ROWS.append(stat)
    print(f"  {name:<54} {stat.median * 1000:8.1f} ms (best {stat.best * 1000:.1f})  {note}", flush=True)
    return stat


def inprocess_mutates(boards: list[tuple[Home, list[str]]], runs: int) -> list[list[float]]:
    """Board.mutate(push=False) per commit, each board already open (what a long-running worker pays).

    The boards take turns, run by run, so a burst of load on this shared machine hits them alike.
    """
    opened = [(Board(home), iter(ids)) for home, ids in boards]
    times: list[list[float]] = [[] for _ in boards]
    try:
        for r in range(runs + 1):
            for k, (board, ids) in enumerate(opened):
                op = board.new_op("claim", next(ids), lease_seconds=600)
                t = time.perf_counter()
                board.mutate(op, push=False)
                if r:  # the first commit warms caches
                    times[k].append(time.perf_counter() - t)
        return times
    finally:
        for board, _ in opened:
            board.close()


def importtime(env: dict[str, str], args: list[str], top: int = 8) -> list[tuple[str, float]]:
    p = subprocess.run(
        [sys.executable, "-X", "importtime", WL, *args], env=env, capture_output=True, text=True
    )
    cumulative: dict[str, float] = {}
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # top-level imports (and their direct children)
            cumulative[m.group(4)] = int(m.group(2)) / 1e6
    return sorted(cumulative.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if GIT is None:
        sys.exit("bench_board: the git binary is needed for the baseline")
    runs = args.runs
    print(
        f"bench_board: {args.items} items, median of {runs} runs, load average {os.getloadavg()}", flush=True
    )
    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    daemon: GitDaemon | None = None
    try:
        served = tmp / "served"
        served.mkdir()
        commons = served / "commons.git"
        create_commons(commons, "bench")

        # the rig joins first (so the handle is registered), then the items land in one commit
        t = time.perf_counter()
        home = make_rig(tmp, str(commons), "bench")
        ids = fill_board(commons, args.items, "bench")
        with Board(home) as b:
            b.refresh()
        print(f"  (built and fetched the {args.items}-item board in {time.perf_counter() - t:.1f} s)")
        env = wl_env(home)
        pick = iter(ids)

        # --- reads ---------------------------------------------------------------------------------------
        record("wl --help", timed(lambda: sh([WL, "--help"], env), runs), "goal < 250 ms")
        sample = ids[len(ids) // 2]
        show = record("wl show <id>", timed(lambda: sh([WL, "show", sample], env), runs), "goal < 150 ms")
        record("wl show <6-char prefix>", timed(lambda: sh([WL, "show", sample[2:8]], env), runs))
        git_show = record(
            "git show HEAD:<item file> (bare clone)",
            timed(
                lambda: sh([GIT, "-C", str(home.repo_path), "show", f"HEAD:{layout.item_path(sample)}"]), runs
            ),
        )
        cache = home.cache_dir / "items.json"

        def drop_cache() -> None:
            cache.unlink(missing_ok=True)

        browse = [WL, "browse", "--limit", "20"]
        record("wl browse --limit 20 (cold parse cache)", timed(lambda: sh(browse, env), 3, setup=drop_cache))
        sh(browse, env)
        warm = record("wl browse --limit 20 (warm)", timed(lambda: sh(browse, env), runs))
        git_ls = record(
            "git ls-tree -r HEAD wanted (lists, parses nothing)",
            timed(lambda: sh([GIT, "-C", str(home.repo_path), "ls-tree", "-r", "HEAD", "wanted"]), runs),
        )

        # --- local commits -------------------------------------------------------------------------------
        wl_local = record(
            "wl claim --no-push (process)",
            timed(lambda: sh([WL, "claim", next(pick), "--no-push"], env), runs),
        )
        sh([WL, "sync"], env)

        # the git CLI on the same data: a non-bare clone with the same files, one file changed per commit
        work = tmp / "git-work"
        sh([GIT, "clone", "-q", str(commons), str(work)])
        sh([GIT, "config", "user.email", "bench@example.invalid"], cwd=work)
        sh([GIT, "config", "user.name", "bench"], cwd=work)
        files = iter(layout.item_path(i) for i in ids[-(3 * runs + 10) :])

        def git_commit_one() -> None:
            path = next(files)
            f = work / path
            f.write_text(f.read_text().replace('"status": "open"', '"status": "claimed"'))
            sh([GIT, "add", path], cwd=work)
            sh([GIT, "commit", "-q", "-m", f"claim {path}"], cwd=work)

        git_local = record(
            f"git add + git commit (one file, {args.items}-file work tree)", timed(git_commit_one, runs)
        )

        # --- pushed to a git daemon ------------------------------------------------------------------------
        wl_push = git_push = git_all = None
        if have_git_daemon():
            daemon = GitDaemon(served)
            daemon.start()
            Home(home.path).set_config("remote", daemon.url("commons.git"))
            wl_push = record(
                "wl claim (fetch + commit + push to git daemon)",
                timed(lambda: sh([WL, "claim", next(pick)], env), runs),
            )
            shutil.copytree(commons, served / "baseline.git")
            sh([GIT, "remote", "set-url", "origin", daemon.url("baseline.git")], cwd=work)
            sh([GIT, "fetch", "-q", "origin"], cwd=work)
            sh([GIT, "reset", "-q", "--hard", "origin/main"], cwd=work)

            def git_fetch_push() -> None:
                sh([GIT, "fetch", "-q", "origin"], cwd=work)
                sh([GIT, "push", "-q", "origin", "HEAD:main"], cwd=work)

            git_push = record(
                "git fetch + git push (one new commit, same daemon)",
                timed(git_fetch_push, runs, setup=git_commit_one),
            )

            def git_full() -> None:
                sh([GIT, "fetch", "-q", "origin"], cwd=work)
                git_commit_one()
                sh([GIT, "push", "-q", "origin", "HEAD:main"], cwd=work)

            git_all = record("git fetch + add + commit + push", timed(git_full, runs))
        else:
            print("  (git daemon not installed: skipping the pushed claim)")

        # --- per-commit cost, in-process, and whether it grows with the board ------------------------------
        small = tmp / "small"
        small.mkdir()
        create_commons(small / "commons.git", "small")
        small_home = make_rig(small, str(small / "commons.git"), "bench")
        small_ids = fill_board(small / "commons.git", max(1, args.items // 10), "bench")
        with Board(small_home) as b:
            b.refresh()
        n = max(runs, 31)
        big_t, small_t = inprocess_mutates(
            [(home, [next(pick) for _ in range(n + 1)]), (small_home, small_ids[: n + 1])], n
        )
        inproc = record(f"Board.mutate(push=False) in-process, {args.items} items", big_t, f"{n} runs")
        inproc_small = record(
            f"Board.mutate(push=False) in-process, {len(small_ids)} items", small_t, f"{n} runs"
        )

        # --- summary ---------------------------------------------------------------------------------------
        print()
        print(f"{'measure':<60}{'median ms':>10}{'best ms':>9}   note")
        for st in ROWS:
            print(f"{st.name:<60}{st.median * 1000:10.1f}{st.best * 1000:9.1f}   {st.note}")
        print()
        print("ratios, wl / git CLI (median; best-of in brackets); the goal for a local mutation is <= 1.0")

        def ratio(label: str, a: Stat | None, b: Stat | None) -> None:
            if a is not None and b is not None:
                print(f"  {label:<52}{a.median / b.median:6.2f}  ({a.best / b.best:.2f})")

        ratio("wl show vs git show", show, git_show)
        ratio("wl browse (warm) vs git ls-tree", warm, git_ls)
        ratio("local commit: wl claim --no-push vs git add+commit", wl_local, git_local)
        ratio("local commit: Board.mutate in-process vs git add+commit", inproc, git_local)
        ratio("pushed claim vs git fetch+push", wl_push, git_push)
        ratio("pushed claim vs git fetch+add+commit+push", wl_push, git_all)
        ratio(f"in-process commit, {args.items} vs {len(small_ids)} items", inproc, inproc_small)
        print()
        print(
            "slowest imports of `wl show` (cumulative, python -X importtime; interpreter start not included):"
        )
        for name, sec in importtime(env, ["show", sample]):
            print(f"  {name:<40} {sec * 1000:7.1f} ms")
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
