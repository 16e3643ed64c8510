"""Issue 15's scale model in simulation: N workers draining one commons, event by event.

    .venv/bin/python tests/benchmarks/scale_sim.py --check-here            # against bench_scale.py's runs here
    .venv/bin/python tests/benchmarks/scale_sim.py --workers 10,100,1000 --job-seconds 30 --server-cores 8 \
        --rtt-ms 40 --batch 4 [--mode lanes|main|results] [--fold-quiet S] [--job-spread F] [--jobs N] \
        [--seeds S] [--json out.json]

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
  first push per item wins, the others lose the race), run each (`--job-seconds` of engine time, or with
  `--job-spread F` a time drawn from `--job-seconds` times 1 - F to 1 + F per job, plus T_RUN of
  CPU for evidence, signature, local commit), then publish the results in one compare-and-swap push of `main`:
  refused when `main` moved since the worker's last fetch, then a jittered back-off, a fetch and a rebuild,
  up to 30 attempts. Idle workers poll every `--poll` seconds.
- `--mode main` is the board before claim lanes: each claim is its own compare-and-swap push of `main`.
- `--mode results` is results on lanes: claims as in `lanes`; a worker pushes its batch of results onto their lanes
  in one lane push (submitted: durable, visible), then folds: one compare-and-swap push of `main` with one `fold`
  commit carrying its results and every other lane result its last fetch saw that `main` lacks (at most
  FOLD_MAX, its own first). The folder validates each carried result (V_COMMIT each), and so does every reader of
  the fold commit. Refused: back-off, fetch; done if a winner's fold carried its results, else rebuild and retry,
  up to 30 attempts ("fold gave up": the results stay on their lanes for a later fold). A worker with nothing to
  claim folds the lane results older than `--fold-idle` seconds (the drain at the end).
- `--fold-quiet S` (results mode; 0, the default: none) gives the workers board/folding.Courtesy's fold manners:
  each tracks when `main` last moved by someone else, its last fetch, and the moving average of the gaps
  between those moves (per commit). A fetch that finds main moved dates the move by main's last commit, as
  `wl` dates it by the time of main's last operation, which is to the second: the move's age less 1 s (at
  least 0, at most the time since the worker's previous fetch); a refused push of its own to `main` is a move
  just now. While main moved lately (the quiet up to its last fetch is under max(S, twice the gap) times a
  factor from 1 to 2 drawn per worker and move) it defers: its results go onto their lanes only, for
  somebody's fold to carry, unless one of them waited MAX_DEFER times S. A worker that never saw a foreign
  move folds at once (its first fetch is a baseline only). As in `wl`, a submission fetches first and, not
  deferring, is one compare-and-swap push of main with a fold of the fresh results and the lane results in
  view (no lane push when it lands; refused, they go onto their lanes and the refusal counts as a move). A
  worker with results waiting decides again after each fetch of its loop and before each retry of a fold; one
  with nothing to claim for `--fold-idle` seconds stops (as `--idle-exit`): it folds what of its own is still
  on lanes, manners or not (there is no drain of others' results then: every worker folds its own in the end).
  A result a fold carried straight from its worker has a lane-to-main lag of 0. A worker busy on a job does
  not fetch: with jobs all of one length and workers that start together, they end their jobs within a
  second of each other, the first folds and the others, finding main moved just now, leave theirs to the
  next fold, a job later (`--job-spread` takes them out of step).
- `--shared-cores K` puts clients and server on one machine of K cores (this one: 2), each CPU burst queued
  for a core; without it every worker has its own machine.

Figures: jobs/min from the workers' start to the last result on `main`, pushes per landed commit (every push,
refused ones included, over the commits that landed: lane claims + lane results + `main` commits), lost races
per claim, submissions that gave up, and the server's CPU busy share; in every mode `main` pushes per result
(attempts, refused ones included, over the jobs); with `--mode results` also the results per fold commit, the
results left on lanes at the end (0: the drain folds them), the lag from lane to `main` (median, p95) and the
folds that gave up. Every item is completed exactly once by construction of the server's rules (checked at
the end).
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
from functools import partial
from typing import Any

MS = 1e-3
WINDOW = 32  # wl_infer.automation SHUFFLE_WINDOW: workers pick among the first 32 runnable items ...
# ... or among twice the claims held, where more are (runnable_items)
ATTEMPTS = 30  # CAS attempts for a `main` push before a result is kept for later
FOLD_MAX = 64  # lane results one fold commit carries at most
MAX_DEFER = 10  # board/folding.py: quiet periods a courteous worker leaves its results to other folds at most
TO_THE_SECOND = 1.0  # operations are dated to the second: `wl` takes a move to be this much younger


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
    job_spread: float = 0.0  # each job's engine time is drawn from job_s * (1 ± job_spread); 0: all job_s
    rtt: float = 0.0
    poll: float = 0.2
    server_cores: int = 2
    shared_cores: int | None = None  # clients and server on one machine of this many cores
    mode: str = "lanes"  # or "main", "results"
    fold_idle: float = 1.0  # results mode: a worker with nothing to claim folds lane results older than this
    fold_quiet: float = 0.0  # results mode: the fold manners' quiet time (board/folding.Courtesy); 0: none
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
        self.pending: dict[int, float] = {}  # results mode: item → when its result reached its lane
        self.lags: list[float] = []  # results mode: seconds from lane to main, per folded result
        self.version = 0
        self.version_at = 0.0  # when main's last commit landed (the poster's: before the workers start)
        self.weight = 0  # main commits as readers validate them: 1 each, a fold 1 per result it carries
        self.main_pushes = self.folds = self.fold_gave_up = 0
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
        return self.free[: max(WINDOW, 2 * (len(self.lane) - len(self.done) - len(self.pending)))]


class Manners:
    """board/folding.Courtesy on the simulation's clock: one worker's fold manners. `seed` names the worker
    and the run; the factor for a quiet period is drawn from it and the time of the move that began it."""

    def __init__(self, quiet: float, clock: Callable[[], float], seed: str) -> None:
        self.quiet, self.clock, self.seed = quiet, clock, seed
        self.moved_at: float | None = None  # when `main` last moved by someone else, as this worker knows
        self.gap = 0.0  # the usual time between those moves (a moving average)
        self.looked_at: float | None = None  # its last fetch
        self.first: dict[int, float] = {}  # its results waiting on their lanes → when it first deferred them
        self._factor: tuple[float | None, float] = (None, 1.0)  # (moved_at, its factor)

    def fetched(self, moved: bool, at: float, commits: int) -> None:
        """After a fetch: whether `main` moved since this worker's last view of it, when main's last commit
        landed, and how many commits arrived. The first fetch is a baseline only. `wl` knows the time of
        main's last operation to the second, so takes the move to be TO_THE_SECOND younger than it is."""
        now = self.clock()
        if moved and self.looked_at is not None:
            self.moved(min(max(0.0, now - at - TO_THE_SECOND), now - self.looked_at), commits)
        self.looked_at = now

    def moved(self, age: float = 0.0, commits: int = 1) -> None:
        """Someone else moved `main` `age` seconds ago (a fetch found it, or a push of its own was refused
        now), with `commits` commits since the last move it knew of."""
        at = self.clock() - age
        if self.moved_at is not None and at > self.moved_at:
            each = (at - self.moved_at) / max(1, commits)
            self.gap = min((self.gap + each) / 2, self.quiet * MAX_DEFER / 4)
        self.moved_at = at if self.moved_at is None else max(at, self.moved_at)

    def defer(self, waiting: list[int]) -> bool:
        """Whether to leave `waiting` (its results not on main yet, fresh ones included) to others' folds now."""
        now = self.clock()
        self.first = {i: self.first.get(i, now) for i in waiting}
        if self.moved_at is None:
            return False
        if self._factor[0] != self.moved_at:
            self._factor = (self.moved_at, random.Random(f"{self.seed}/{self.moved_at!r}").uniform(1.0, 2.0))
        quiet_for = max(self.looked_at or 0.0, self.moved_at) - self.moved_at
        if quiet_for >= max(self.quiet, 2 * self.gap) * self._factor[1]:
            return False
        return now - min(self.first.values(), default=now) < self.quiet * MAX_DEFER


def simulate(cfg: Config) -> dict[str, Any]:
    sim, c, rng = Sim(), cfg.costs, random.Random(cfg.seed)
    lengths = random.Random(f"{cfg.seed}/jobs")  # --job-spread: its own draws, the others' stay as they were
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

    def land_main(expected: int, weight: int) -> bool:
        """One compare-and-swap push of main, counted: it lands (one commit of `weight` jobs) when main is
        still at `expected`."""
        board.pushes += 1
        board.main_pushes += 1
        if board.version != expected:
            return False
        board.version += 1
        board.version_at = sim.now
        board.weight += weight
        board.landed += 1
        return True

    def worker(me: int) -> Proc:
        cpu = clients[me]
        yield ("cpu", cpu, c.t_start)
        seen_version = -board.jobs  # the poster's commits (one per job) are new to a worker's first fetch
        seen_weight, seen_lanes = -board.jobs, 0
        view: dict[int, float] = {}  # results mode: lane results not on main at the last fetch, + its own
        manners: Manners | None = None  # --fold-quiet: this worker's fold manners ...
        if cfg.mode == "results" and cfg.fold_quiet > 0:
            manners = Manners(cfg.fold_quiet, lambda: sim.now, f"{cfg.seed}/{me}")
        own: dict[int, None] = {}  # ... and its results on lanes, oldest first
        idle_since: float | None = None

        def waiting() -> list[int]:
            """Its results only on their lanes as of its view; those somebody else's fold carried are let go."""
            for i in [i for i in own if i not in view]:
                del own[i]
            return list(own)

        def fetch(watch: tuple[int, ...] = ()) -> Generator[Step, Any, tuple[list[int], set[int]]]:
            """(the first WINDOW runnable items, which of `watch` are taken), as of the server's answer."""
            nonlocal seen_version, seen_weight, seen_lanes, view
            yield ("cpu", cpu, c.t_fetch)

            def read() -> tuple[int, float, int, list[int], set[int], int, dict[int, float]]:
                taken = {i for i in watch if i in board.lane or i in board.done}
                pending = dict(board.pending)
                version = board.version, board.version_at, board.weight
                return *version, board.window(), taken, board.lane_pushes, pending

            version, version_at, weight, window, taken, lanes, view = yield from request(c.c_fetch, read)
            checks, folds = c.v_commit * max(0, weight - seen_weight), c.t_fold * (lanes - seen_lanes)
            if manners is None:
                yield ("cpu", cpu, checks + folds)
            else:  # as Board._fetch: main's new commits validated, the manners told, then the lanes folded
                yield ("cpu", cpu, checks)
                manners.fetched(version != seen_version, version_at, version - seen_version)
                yield ("cpu", cpu, folds)
            seen_version, seen_weight, seen_lanes = version, weight, lanes
            return window, taken

        def cas_main(
            first: float, rebuild: float, change: Callable[[], None], watch: tuple[int, ...] = (),
            seen_taken: set[int] | None = None,
        ) -> Generator[Step, Any, str]:
            """One compare-and-swap push of main (`first`: client CPU to build it, `rebuild`: to build it again
            on a refetched head), retried: "landed", "lost" (`watch[0]`: the item it claims, taken on the
            refetched board) or "gave up". Every refetch adds what it shows taken of `watch` (the batch's items
            still to claim) to `seen_taken`."""
            nonlocal seen_version, seen_weight
            for attempt in range(1, ATTEMPTS + 1):
                yield ("cpu", cpu, c.t_push + (first if attempt == 1 else rebuild))
                expected = seen_version

                def try_land(expected: int = expected) -> bool:
                    if not land_main(expected, 1):
                        return False
                    change()
                    return True

                # the server spends C_MAIN on a push it takes, C_ADV on one refused at the advertisement
                landed = yield from request(c.c_main if board.version == expected else c.c_adv, try_land)
                if landed:
                    seen_version += 1
                    seen_weight += 1
                    return "landed"
                yield ("delay", rng.uniform(0, min(0.5, 0.01 * 2**attempt)))  # board.service._backoff
                _, taken = yield from fetch(watch)
                if seen_taken is not None:
                    seen_taken.update(taken)
                if watch and watch[0] in taken:
                    return "lost"
            return "gave up"

        def try_fold(expected: int, carry: list[int]) -> bool:
            """The server takes a fold commit carrying `carry` when main is still at `expected`."""
            if not land_main(expected, len(carry)):
                return False
            board.folds += 1
            for i in carry:  # main has not moved since the fetch, so each is still only on its lane ...
                # ... or, folded straight from its worker (--fold-quiet), on no lane at all: no lag
                board.lags.append(sim.now - board.pending.pop(i) if i in board.pending else 0.0)
                board.done[i] = board.done.get(i, 0) + 1
            board.last_done_at = sim.now
            return True

        def push_fold(carry: list[int]) -> Generator[Step, Any, bool]:
            """One compare-and-swap push of a fold carrying `carry` from the main this worker saw; on landing,
            its view follows and the carried results are off their lanes."""
            nonlocal seen_version, seen_weight
            expected = seen_version
            cost = c.c_main if board.version == expected else c.c_adv
            if not (yield from request(cost, partial(try_fold, expected, carry))):
                return False
            seen_version += 1
            seen_weight += len(carry)
            for i in carry:
                view.pop(i, None)
            return True

        def fold(target: list[int], polite: bool = False) -> Generator[Step, Any, None]:
            """Results mode: a compare-and-swap push of one fold commit carrying `target` (its own results, or the
            stale ones an idle worker saw) and the other lane results in view, oldest first, up to FOLD_MAX;
            retried until a fold (its own or a winner's) carried `target`, or 30 attempts; `polite`: or until its
            manners say defer, asked again before each retry."""
            nonlocal seen_version, seen_weight
            wanted = set(target)
            for attempt in range(1, ATTEMPTS + 1):
                mine = [i for i in target if i in view]
                if not mine:
                    return  # the winner's fold carried them
                if polite and attempt > 1 and manners is not None and manners.defer(waiting()):
                    return  # main moved: left on their lanes to the next fold
                carry = (mine + [i for i in view if i not in wanted])[:FOLD_MAX]
                # the folder checks every result it carries (its signature, on its lane), as each reader will
                yield ("cpu", cpu, c.t_push + c.v_commit * len(carry) + (c.t_rebuild if attempt > 1 else 0.0))
                if (yield from push_fold(carry)):
                    return
                if manners is not None:
                    manners.moved()  # a refused push of its own: someone else moved main
                yield ("delay", rng.uniform(0, min(0.5, 0.01 * 2**attempt)))
                yield from fetch()
            board.fold_gave_up += 1  # the results stay on their lanes: a later fold carries them

        def fold_first(fresh: list[int]) -> Generator[Step, Any, list[int]]:
            """--fold-quiet: one compare-and-swap push of main with a fold of `fresh` (results on no lane yet) and
            the lane results in view, up to FOLD_MAX (board/folding._fold_first); those of `fresh` it landed."""
            nonlocal seen_version, seen_weight
            carry = (fresh + [i for i in view if i not in fresh])[:FOLD_MAX]
            yield ("cpu", cpu, c.t_push + c.v_commit * len(carry))
            if (yield from push_fold(carry)):
                return [i for i in carry if i in fresh]
            assert manners is not None
            manners.moved()  # refused: someone else moved main; the results go onto their lanes
            return []

        while True:
            window, _ = yield from fetch()
            if manners is not None:  # its results waiting on lanes: fold them now, manners permitting ...
                mine = waiting()
                if not window and idle_since is None:
                    idle_since = sim.now
                stopping = idle_since is not None and sim.now - idle_since >= cfg.fold_idle
                if mine and (stopping or not manners.defer(mine)):  # ... or whatever main does, on stopping
                    yield from fold(mine, polite=not stopping)
                    continue
            elif not window:
                stale = [i for i, t in view.items() if sim.now - t >= cfg.fold_idle]
                if stale:  # results mode, nothing to claim: fold what has waited on its lane (the drain)
                    yield from fold(stale)
                    continue
            if not window:
                if len(board.done) == board.jobs:
                    return
                yield ("delay", cfg.poll)
                continue
            picked = rng.sample(window, min(cfg.batch, len(window)))
            won: list[int] = []
            if cfg.mode in ("lanes", "results"):
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
                seen_taken: set[int] = set()  # of the batch, what a refetch showed taken: its rules refuse those
                for k, i in enumerate(picked):  # before lanes: each claim its own compare-and-swap of main
                    if i in seen_taken:
                        continue

                    def claim_main(i: int = i) -> None:
                        board.lane[i] = me
                        board.take(i)

                    got = yield from cas_main(c.t_claim, c.t_claim, claim_main, tuple(picked[k:]), seen_taken)
                    if got == "landed":
                        won.append(i)
            board.claims += len(won)
            board.lost += len(picked) - len(won)
            if not won:
                continue
            for _ in won:
                spread = cfg.job_s * cfg.job_spread
                job_s = lengths.uniform(cfg.job_s - spread, cfg.job_s + spread) if spread else cfg.job_s
                yield ("delay", job_s)
                yield ("cpu", cpu, c.t_run)
            if cfg.mode == "results":  # one lane push moves each result's lane from the claim it holds
                if manners is not None:  # `wl` fetches before it submits (Board.mutate, Board.sync)
                    yield from fetch()
                if manners is not None and not manners.defer(waiting() + won):  # main quiet: straight onto it
                    landed = yield from fold_first(won)
                    won = [i for i in won if i not in landed]
                    if not won:
                        continue
                yield ("cpu", cpu, c.t_push)

                def submit(won: list[int] = won) -> float:
                    board.pushes += 1
                    board.landed += len(won)
                    board.lane_pushes += len(won)
                    board.pending.update(dict.fromkeys(won, sim.now))
                    return sim.now

                at = yield from request(c.c_lane + c.c_lane_more * (len(won) - 1), submit)
                view.update(dict.fromkeys(won, at))
                if manners is None:
                    yield from fold(won)
                else:
                    own.update(dict.fromkeys(won))
                    if not manners.defer(waiting()):
                        yield from fold(waiting(), polite=True)
                continue

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
    assert not board.pending, "results left on their lanes"
    wall, lags = board.last_done_at, sorted(board.lags)
    nan = float("nan")
    return {
        "workers": cfg.workers, "batch": cfg.batch, "mode": cfg.mode, "job_s": cfg.job_s,
        "jobs_per_min": 60 * board.jobs / wall if wall else float("nan"),
        "pushes_per_landed": board.pushes / board.landed if board.landed else float("nan"),
        "lost_per_claim": board.lost / board.claims if board.claims else float("nan"),
        "gave_up": board.gave_up,
        "cpu_busy": server.busy / (wall * (cfg.shared_cores or cfg.server_cores)) if wall else float("nan"),
        "main_pushes_per_result": board.main_pushes / board.jobs,
        "folded": len(lags), "on_lanes": len(board.pending), "fold_gave_up": board.fold_gave_up,
        "results_per_fold": len(lags) / board.folds if board.folds else nan,
        "lag_median": lags[len(lags) // 2] if lags else nan,
        "lag_p95": lags[min(len(lags) - 1, int(0.95 * len(lags)))] if lags else nan,
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
    ap.add_argument("--job-spread", type=float, default=0.0, help="jobs take --job-seconds times 1 ± this")
    ap.add_argument("--rtt-ms", type=float, default=0.0)
    ap.add_argument("--server-cores", type=int, default=2)
    ap.add_argument("--shared-cores", type=int)
    ap.add_argument("--mode", choices=["lanes", "main", "results"], default="lanes")
    ap.add_argument("--fold-idle", type=float, default=1.0, help="results mode: idle workers fold older ones")
    quiet = "results mode: fold manners, a worker folds once main was quiet this long (0: none)"
    ap.add_argument("--fold-quiet", type=float, default=0.0, help=quiet)
    ap.add_argument("--seeds", type=int, default=3, help="runs per row (medians)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = []
    if args.check_here:
        print("| mode | batch | workers | simulated jobs/min | measured here | simulated pushes/landed | lost/claim |")
        print("|---|---|---|---|---|---|---|")
        here: dict[tuple[str, int], dict[int, int | None]] = {key: dict(got) for key, got in HERE.items()}
        if args.mode == "results":  # not measured: no worker submits on lanes yet
            here.update({("results", b): dict.fromkeys((1, 2, 4, 8)) for b in (1, 4)})
        for (mode, batch), measured in here.items():
            for k, got in measured.items():
                row = _median([simulate(Config(k, jobs=args.jobs or 80, batch=batch, mode=mode, shared_cores=2,
                                               fold_idle=args.fold_idle, fold_quiet=args.fold_quiet, seed=s))
                              for s in range(args.seeds)])  # fmt: skip
                rows.append({**row, "measured": got})
                print(f"| {mode} | {batch} | {k} | {row['jobs_per_min']:.0f} | {'–' if got is None else got} "
                      f"| {row['pushes_per_landed']:.2f} | {row['lost_per_claim']:.2f} |")  # fmt: skip
    else:
        more = args.mode == "results"
        extra = " main pushes per result | results per fold | left on lanes | lane to main (median · p95) | fold gave up |"
        print("| workers | jobs/min | pushes per landed commit | lost races per claim | gave up | server CPU busy (all CPU with --shared-cores) |"
              + extra * more)  # fmt: skip
        print("|---|---|---|---|---|---|" + "---|" * 5 * more)
        for k in (int(x) for x in args.workers.split(",")):
            jobs = args.jobs or max(80, 4 * k * args.batch)
            row = _median([simulate(Config(k, jobs=jobs, batch=args.batch, job_s=args.job_seconds,
                                           job_spread=args.job_spread, rtt=args.rtt_ms * MS,
                                           server_cores=args.server_cores, shared_cores=args.shared_cores,
                                           mode=args.mode,
                                           fold_idle=args.fold_idle, fold_quiet=args.fold_quiet, seed=s))
                           for s in range(args.seeds)])  # fmt: skip
            rows.append(row)
            print(f"| {k} | {row['jobs_per_min']:.0f} | {row['pushes_per_landed']:.2f} "
                  f"| {row['lost_per_claim']:.2f} | {row['gave_up']} | {row['cpu_busy']:.0%} |"
                  + (f" {row['main_pushes_per_result']:.2f} | {row['results_per_fold']:.1f} | {row['on_lanes']} "
                     f"| {row['lag_median']:.2f} s · {row['lag_p95']:.2f} s | {row['fold_gave_up']} |" if more else ""))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for key in ("jobs_per_min", "pushes_per_landed", "lost_per_claim", "gave_up", "cpu_busy",
                "main_pushes_per_result", "folded", "on_lanes", "fold_gave_up", "results_per_fold", "lag_median",
                "lag_p95"):  # fmt: skip
        vals = sorted(r[key] for r in runs)
        out[key] = vals[len(vals) // 2]
    return out


if __name__ == "__main__":
    main()
