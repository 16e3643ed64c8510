"""Issue 15's scale model in simulation: N workers draining one commons, event by event.

    .venv/bin/python tests/benchmarks/scale_sim.py --check-here            # against bench_scale.py's runs here
    .venv/bin/python tests/benchmarks/scale_sim.py --workers 10,100,1000 --job-seconds 30 --server-cores 8 \
        --rtt-ms 40 --batch 4 [--mode lanes|main] [--jobs N] [--seed S] [--json out.json]

A discrete-event simulation (no threads, no sleeps; deterministic for a seed) of what bench_scale.py runs for
real, so the README's model can be checked against this machine and then pushed to sizes no machine here
can run. What it models, with costs from tests/benchmarks/bench_push_cost.py and the workers' profiles:

- The git server: `--server-cores` cores; a fetch costs C_FETCH of server CPU, a lane push C_LANE (+ C_LANE_MORE per
  further lane in the same push), a `main` push C_MAIN, a push refused at the advertisement C_ADV (the client
  aborts before sending its pack when main moved). Requests queue for a free core.
- The network: half an `--rtt-ms` each way per request.
- A worker (one process): start-up T_START of CPU, then the loop of `wl infer worker --batch B`: fetch (and
  validate every new `main` commit, V_COMMIT each: every reader checks the history), pick up to B runnable
  items at random among the first 32 it sees, claim them on their lanes in one push (create-if-absent: the
  first push per item wins, the others lose the race), run each (`--job-seconds` of engine time plus T_RUN of
  CPU for evidence, signature, local commit), then publish the results in one compare-and-swap push of `main`:
  refused when `main` moved since the worker's last fetch, then a jittered back-off, a fetch and a rebuild,
  up to 30 attempts. Idle workers poll every `--poll` seconds.
- `--mode main` is the board before claim lanes: each claim is its own compare-and-swap push of `main`.
- `--shared-cores K` puts clients and server on one machine of K cores (this one: 2), each CPU burst queued
  for a core; without it every worker has its own machine.

Figures: jobs/min from the workers' start to the last result on `main`, pushes per landed commit (every push,
refused ones included, over the commits that landed: lane claims + `main` commits), lost races per claim,
submissions that gave up, and the server's CPU busy share. Every item is completed exactly once by
construction of the server's rules (checked at the end).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import random
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

MS = 1e-3
WINDOW = 32  # wl_infer.automation SHUFFLE_WINDOW: workers pick among the first 32 runnable items ...
# ... or among twice the claims held, where more are (runnable_items)
ATTEMPTS = 30  # CAS attempts for a `main` push before a result is kept for later


@dataclass
class Costs:
    """Seconds. Server costs from bench_push_cost.py (git daemon, 127.0.0.1); client costs from profiles of
    `wl infer worker` (cProfile, this machine, quiet): see the README's scale section."""

    c_fetch: float = 6 * MS  # server CPU per fetch (upload-pack)
    c_lane: float = 20 * MS  # server CPU per lane push (receive-pack, one lane)
    c_lane_more: float = 3 * MS  # ... per further lane in the same push
    c_main: float = 28 * MS  # server CPU per accepted `main` push
    c_adv: float = 6 * MS  # server CPU per push refused at the advertisement
    t_fetch: float = 15 * MS  # client CPU per fetch (negotiation, pack ingestion, pack maintenance)
    t_fold: float = 2 * MS  # client CPU per lane that changed since the last fetch (folded and checked)
    v_commit: float = 2 * MS  # client CPU to validate one new `main` commit
    t_claim: float = 6 * MS  # client CPU per lane commit built and signed
    t_run: float = 25 * MS  # client CPU per job beside the engine (evidence, signature, local commit)
    t_push: float = 8 * MS  # client CPU per push (pack, protocol)
    t_rebuild: float = 4 * MS  # client CPU per result rebuilt on a new `main` head after a refused push
    t_start: float = 0.6  # client CPU at start-up (imports, the first fetch's validation)


@dataclass
class Config:
    workers: int
    jobs: int = 80
    batch: int = 1
    job_s: float = 0.0
    rtt: float = 0.0
    poll: float = 0.2
    server_cores: int = 2
    shared_cores: int | None = None  # clients and server on one machine of this many cores
    mode: str = "lanes"  # or "main"
    seed: int = 1
    costs: Costs = field(default_factory=Costs)


class Cpu:
    """A pool of cores; bursts queue FIFO for a free one."""

    def __init__(self, sim: Sim, cores: int) -> None:
        self.sim, self.free, self.queue, self.busy = sim, cores, deque[tuple[float, Callable[[], None]]](), 0.0

    def run(self, seconds: float, then: Callable[[], None]) -> None:
        if self.free > 0:
            self.free -= 1
            self.busy += seconds
            self.sim.at(seconds, lambda: self._done(then))
        else:
            self.queue.append((seconds, then))

    def _done(self, then: Callable[[], None]) -> None:
        self.free += 1
        if self.queue:
            seconds, nxt = self.queue.popleft()
            self.run(seconds, nxt)
        then()


Step = tuple[Any, ...]
Proc = Generator[Step, Any, None]


class Sim:
    def __init__(self) -> None:
        self.now, self._seq, self._events = 0.0, 0, list[tuple[float, int, Callable[[], None]]]()

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, fn))

    def spawn(self, proc: Proc) -> None:
        self._step(proc, None)

    def _step(self, proc: Proc, value: Any) -> None:
        try:
            cmd = proc.send(value)
        except StopIteration:
            return
        kind = cmd[0]
        if kind == "delay":
            self.at(cmd[1], lambda: self._step(proc, None))
        elif kind == "cpu":
            cmd[1].run(cmd[2], lambda: self._step(proc, None))
        elif kind == "call":  # an atomic change of the server's state, now
            self._step(proc, cmd[1]())
        else:
            raise ValueError(kind)

    def run(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            self.now, _, fn = heapq.heappop(self._events)
            fn()


class Commons:
    """The server's truth: lanes (item → holder), `main`'s version and the items completed on it."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.lane: dict[int, int] = {}
        self.done: dict[int, int] = {}  # item → how many times completed (must end at 1 each)
        self.version = 0
        self.lane_pushes = 0  # lane refs moved so far (what a fetch folds anew)
        self.landed = self.pushes = self.claims = self.lost = self.gave_up = 0
        self.last_done_at = 0.0
        self.free = list(range(jobs))  # items nobody holds, in the order views list them

    def take(self, item: int) -> None:
        at = bisect.bisect_left(self.free, item)
        if at < len(self.free) and self.free[at] == item:
            del self.free[at]

    def window(self) -> list[int]:
        """The first items nobody holds, WINDOW or twice the claims held: what a worker's view shuffles first."""
        return self.free[: max(WINDOW, 2 * (len(self.lane) - len(self.done)))]


def simulate(cfg: Config) -> dict[str, Any]:
    sim, c, rng = Sim(), cfg.costs, random.Random(cfg.seed)
    board = Commons(cfg.jobs)
    shared = Cpu(sim, cfg.shared_cores) if cfg.shared_cores else None
    server = shared or Cpu(sim, cfg.server_cores)
    clients = [shared or Cpu(sim, 1) for _ in range(cfg.workers)]

    def request(cost: float, change: Callable[[], Any]) -> Generator[Step, Any, Any]:
        yield ("delay", cfg.rtt / 2)
        yield ("cpu", server, cost)
        result = yield ("call", change)
        yield ("delay", cfg.rtt / 2)
        return result

    def worker(me: int) -> Proc:
        cpu = clients[me]
        yield ("cpu", cpu, c.t_start)
        seen_version = -board.jobs  # the poster's commits (one per job) are new to a worker's first fetch
        seen_lanes = 0

        def fetch(watch: tuple[int, ...] = ()) -> Generator[Step, Any, tuple[list[int], set[int]]]:
            """(the first WINDOW runnable items, which of `watch` are taken), as of the server's answer."""
            nonlocal seen_version, seen_lanes
            yield ("cpu", cpu, c.t_fetch)

            def read() -> tuple[int, list[int], set[int], int]:
                taken = {i for i in watch if i in board.lane or i in board.done}
                return board.version, board.window(), taken, board.lane_pushes

            version, window, taken, lanes = yield from request(c.c_fetch, read)
            yield ("cpu", cpu, c.v_commit * max(0, version - seen_version) + c.t_fold * (lanes - seen_lanes))
            seen_version, seen_lanes = version, lanes
            return window, taken

        def cas_main(
            first: float, rebuild: float, change: Callable[[], None], watch: tuple[int, ...] = ()
        ) -> Generator[Step, Any, str]:
            """One compare-and-swap push of main (`first`: client CPU to build it, `rebuild`: to build it again
            on a refetched head), retried: "landed", "lost" (`watch`: the item it claims, taken on the refetched
            board) or "gave up"."""
            nonlocal seen_version
            for attempt in range(1, ATTEMPTS + 1):
                yield ("cpu", cpu, c.t_push + (first if attempt == 1 else rebuild))
                expected = seen_version

                def try_land(expected: int = expected) -> bool:
                    board.pushes += 1
                    if board.version != expected:
                        return False
                    board.version += 1
                    board.landed += 1
                    change()
                    return True

                # the server spends C_MAIN on a push it takes, C_ADV on one refused at the advertisement
                landed = yield from request(c.c_main if board.version == expected else c.c_adv, try_land)
                if landed:
                    seen_version += 1
                    return "landed"
                yield ("delay", rng.uniform(0, min(0.5, 0.01 * 2**attempt)))  # board.service._backoff
                _, taken = yield from fetch(watch)
                if taken:
                    return "lost"
            return "gave up"

        while True:
            window, _ = yield from fetch()
            if not window:
                if len(board.done) == board.jobs:
                    return
                yield ("delay", cfg.poll)
                continue
            picked = rng.sample(window, min(cfg.batch, len(window)))
            won: list[int] = []
            if cfg.mode == "lanes":
                yield ("cpu", cpu, c.t_claim * len(picked) + c.t_push)

                def claim_lanes(picked: list[int] = picked) -> list[int]:
                    board.pushes += 1
                    got = [i for i in picked if i not in board.lane and i not in board.done]
                    for i in got:
                        board.lane[i] = me
                        board.take(i)
                    board.lane_pushes += len(got)
                    board.landed += len(got)
                    return got

                won = yield from request(c.c_lane + c.c_lane_more * (len(picked) - 1), claim_lanes)
            else:
                for i in picked:  # before lanes: each claim its own compare-and-swap of main
                    def claim_main(i: int = i) -> None:
                        board.lane[i] = me
                        board.take(i)

                    got = yield from cas_main(c.t_claim, c.t_claim, claim_main, (i,))
                    if got == "landed":
                        won.append(i)
            board.claims += len(won)
            board.lost += len(picked) - len(won)
            if not won:
                continue
            for _ in won:
                yield ("delay", cfg.job_s)
                yield ("cpu", cpu, c.t_run)

            def complete(won: list[int] = won) -> None:
                for i in won:
                    board.done[i] = board.done.get(i, 0) + 1
                board.last_done_at = sim.now

            if (yield from cas_main(0.0, c.t_rebuild * len(won), complete)) != "landed":
                board.gave_up += len(won)
                for i in won:  # kept and resubmitted later: counted as given up, not lost
                    board.done[i] = board.done.get(i, 0) + 1

    for k in range(cfg.workers):
        sim.spawn(worker(k))
    sim.run(until=24 * 3600)
    assert all(n == 1 for n in board.done.values()) and len(board.done) == board.jobs, "not exactly once"
    wall = board.last_done_at
    return {
        "workers": cfg.workers, "batch": cfg.batch, "mode": cfg.mode, "job_s": cfg.job_s,
        "jobs_per_min": 60 * board.jobs / wall if wall else float("nan"),
        "pushes_per_landed": board.pushes / board.landed if board.landed else float("nan"),
        "lost_per_claim": board.lost / board.claims if board.claims else float("nan"),
        "gave_up": board.gave_up,
        "cpu_busy": server.busy / (wall * (cfg.shared_cores or cfg.server_cores)) if wall else float("nan"),
    }  # fmt: skip


# bench_scale.py on this machine (2 cores, git daemon, 80 jobs, fake engine), medians, as the README reports
# (claims on main: before claim lanes, commit 6c2070b, at load 2-16)
HERE = {
    ("main", 1): {1: 432, 2: 147, 4: 89, 8: 36},
    ("lanes", 1): {1: 490, 2: 497, 4: 279, 8: 159},
    ("lanes", 4): {1: 682, 2: 773, 4: 556, 8: 291},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-here", action="store_true", help="simulate this machine and compare with HERE")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--job-seconds", type=float, default=0.0)
    ap.add_argument("--rtt-ms", type=float, default=0.0)
    ap.add_argument("--server-cores", type=int, default=2)
    ap.add_argument("--shared-cores", type=int)
    ap.add_argument("--mode", choices=["lanes", "main"], default="lanes")
    ap.add_argument("--seeds", type=int, default=3, help="runs per row (medians)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = []
    if args.check_here:
        print("| mode | batch | workers | simulated jobs/min | measured here | simulated pushes/landed | lost/claim |")
        print("|---|---|---|---|---|---|---|")
        for (mode, batch), measured in HERE.items():
            for k, got in measured.items():
                row = _median([simulate(Config(k, jobs=args.jobs or 80, batch=batch, mode=mode, shared_cores=2,
                                               seed=s)) for s in range(args.seeds)])  # fmt: skip
                rows.append({**row, "measured": got})
                print(f"| {mode} | {batch} | {k} | {row['jobs_per_min']:.0f} | {got} "
                      f"| {row['pushes_per_landed']:.2f} | {row['lost_per_claim']:.2f} |")  # fmt: skip
    else:
        print("| workers | jobs/min | pushes per landed commit | lost races per claim | gave up | server CPU busy (all CPU with --shared-cores) |")
        print("|---|---|---|---|---|---|")
        for k in (int(x) for x in args.workers.split(",")):
            jobs = args.jobs or max(80, 4 * k * args.batch)
            row = _median([simulate(Config(k, jobs=jobs, batch=args.batch, job_s=args.job_seconds,
                                           rtt=args.rtt_ms * MS, server_cores=args.server_cores,
                                           shared_cores=args.shared_cores, mode=args.mode, seed=s))
                           for s in range(args.seeds)])  # fmt: skip
            rows.append(row)
            print(f"| {k} | {row['jobs_per_min']:.0f} | {row['pushes_per_landed']:.2f} "
                  f"| {row['lost_per_claim']:.2f} | {row['gave_up']} | {row['cpu_busy']:.0%} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for key in ("jobs_per_min", "pushes_per_landed", "lost_per_claim", "gave_up", "cpu_busy"):
        vals = sorted(r[key] for r in runs)
        out[key] = vals[len(vals) // 2]
    return out


if __name__ == "__main__":
    main()
