"""`wl infer worker`: the unattended claim → run → submit loop, through real `wl` processes and real remotes.

The Ollama server cannot be installed here; these tests run the ollama backend against a small HTTP server on
127.0.0.1 that speaks Ollama's API (tests/fake_servers.py), which is fast and can be made slow or failing.
Everything else is real: bare commons served by `git daemon` or by path, one home and key per rig, workers
as real `wl infer worker` subprocesses, signals and SIGKILL. One test runs the real llama.cpp engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_servers import FakeOllama, fake_completion
from infer_helpers import Rigs, make_rigs
from remotes import (
    WL,
    claims_of,
    commit_file_to_remote,
    join_rig,
    lane_ops,
    main_ops,
    make_commons,
    remote_item,
    remote_ops,
    running_git_daemon,
    running_http,
)

from board.home import Home
from board.ops import Op
from board.service import MAX_ATTEMPTS, Board
from wl_infer.codec import Evidence, Job

MODEL = "llama3.2:1b"


# --- helpers ---------------------------------------------------------------------------------------------
class WlProc:
    """A real `wl` process whose stdout (JSON event lines) a thread collects, so tests can wait on events."""

    def __init__(self, home: Path, *args: str, env: dict[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"}
        full_env.update(env)
        self.argv = [WL, "--home", str(home), "--json", *args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                try:
                    self.events.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    pass
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, event: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {event!r} event; output:\n{''.join(self.lines)}")
                self._cond.wait(min(left, 0.2))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == event]

    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


@pytest.fixture
def procs() -> Iterator[list[WlProc]]:
    """Every process a test starts is killed at teardown, whatever happened."""
    started: list[WlProc] = []
    yield started
    for p in started:
        p.kill()


def post_jobs(home: Path, prompts: list[str], model: str = MODEL, **fields: Any) -> list[str]:
    from wl_infer.jobs import post_job

    with Board(Home(home)) as b:
        return [post_job(b, Job(prompt=p, model=model, max_tokens=8, **fields)).item_id for p in prompts]


@contextlib.contextmanager
def poster_and_bob(tmp_path: Path) -> Iterator[tuple[Any, Path, Any, Any]]:
    """A commons behind git's own http-backend (which counts pushes), a poster and a worker rig, bob."""
    with running_http(tmp_path / "srv") as server:
        repo = make_commons(tmp_path / "srv")
        url = server.url("commons.git")
        yield server, repo, join_rig(tmp_path, url, "poster"), join_rig(tmp_path, url, "bob")


def board_ops(commons: Path) -> list[Op]:
    return main_ops(commons)


def check_history(ops: list[Op], allow_takeover: bool = False) -> Counter[str]:
    """Replay the board's history: a claim never lands on a held item (unless taken over), only the holder
    renews or completes (a claim made on the item's lane arrives with the done that carries it). Returns the number of `done` operations per item."""
    holder: dict[str, str | None] = {}
    done: Counter[str] = Counter()
    for op in ops:
        if op.id is None:
            continue
        if op.op == "claim":
            if not allow_takeover:
                assert holder.get(op.id) is None, f"{op.id} claimed by {op.by} while held by {holder[op.id]}"
            holder[op.id] = op.by
        elif op.op == "renew":
            assert holder.get(op.id) == op.by
        elif op.op == "unclaim":
            holder[op.id] = None
        elif op.op == "done":
            if isinstance(op.args.get("lane"), dict):  # the claim it carries from the item's claim lane
                if not allow_takeover:
                    assert holder.get(op.id) is None, f"{op.id} claimed by {op.by} while held by {holder[op.id]}"
                holder[op.id] = op.by
            assert holder.get(op.id) == op.by, f"{op.id} completed by {op.by}, held by {holder.get(op.id)}"
            holder[op.id] = None
            done[op.id] += 1
    return done


def completion_of(home: Path, item_id: str) -> tuple[str, Evidence]:
    with Board(Home(home)) as b:
        b.refresh()
        comp = b.view().completion(item_id)
        assert comp is not None, item_id
        return comp.completed_by, Evidence.decode(comp.evidence)


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


# --- many workers, one commons ------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_three_workers_over_git_daemon_complete_every_job_exactly_once(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    with running_git_daemon(tmp_path / "srv") as daemon:
        make_commons(tmp_path / "srv")
        url = daemon.url("commons.git")
        poster = join_rig(tmp_path, url, "poster")
        workers = [join_rig(tmp_path, url, h) for h in ("w1", "w2", "w3")]
        prompts = [f"job number {i}" for i in range(24)]
        ids = post_jobs(poster.home, prompts)
        for w in workers:
            procs.append(WlProc(w.home, "infer", "worker", "--poll", "0.2", "--idle-exit", "2", "--max-jobs", "24",
                                env={"OLLAMA_HOST": ollama.url}))  # fmt: skip
        codes = [p.finish(timeout=180) for p in procs]
        assert codes == [0, 0, 0], [p.output() for p in procs]
        completions = {i: completion_of(poster.home, i) for i in ids}

    done = check_history(board_ops(tmp_path / "srv" / "commons.git"))  # never claimed by two rigs at once
    assert done == Counter({i: 1 for i in ids})  # every job completed exactly once, none lost
    by_worker = {w.handle: {e["id"] for e in p.named("done")} for w, p in zip(workers, procs, strict=True)}
    assert sum(len(v) for v in by_worker.values()) == 24 and set().union(*by_worker.values()) == set(ids)
    for item_id, prompt in zip(ids, prompts, strict=True):
        who, ev = completions[item_id]
        assert item_id in by_worker[who]
        assert ev.output == fake_completion(prompt, 42, 8)[0] and ev.worker == who
    for p in procs:
        stopped = p.wait_for("stopped", timeout=1)
        claimed = p.named("claimed")
        assert stopped["claims"] == len(claimed) and all(isinstance(e["retries"], int) for e in claimed)
        assert stopped["lost_races"] == len(p.named("lost_race"))
    for w in workers:
        assert not list((w.home / "results").glob("*.json"))  # nothing left unsubmitted


@pytest.mark.timeout(240)
def test_batch_workers_claim_in_one_push_and_publish_results_in_one_push(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    """`--batch 4`: each round claims up to four items on their lanes in one push, runs them, and publishes the
    four `done` commits in one push; every job is still completed exactly once, by the rig that claimed it."""
    with running_git_daemon(tmp_path / "srv") as daemon:
        commons = make_commons(tmp_path / "srv")
        url = daemon.url("commons.git")
        poster = join_rig(tmp_path, url, "poster")
        workers = [join_rig(tmp_path, url, h) for h in ("w1", "w2")]
        prompts = [f"batched job {i}" for i in range(16)]
        ids = post_jobs(poster.home, prompts)
        main_before = len(remote_ops(commons))
        for w in workers:
            procs.append(WlProc(w.home, "infer", "worker", "--batch", "4", "--poll", "0.2", "--idle-exit", "2",
                                env={"OLLAMA_HOST": ollama.url}))  # fmt: skip
        codes = [p.finish(timeout=180) for p in procs]
        assert codes == [0, 0], [p.output() for p in procs]
        completions = {i: completion_of(poster.home, i) for i in ids}

    ops = board_ops(commons)
    assert check_history(ops) == Counter({i: 1 for i in ids})
    new_main = [op for _, op in remote_ops(commons)[main_before:]]
    # the results went onto their lanes, batch by batch, and folds carried them into main: fewer main commits
    # than jobs, each a fold (board/folds.py); the claims stayed on lanes
    assert new_main and all(op is not None and op.op == "fold" for op in new_main), new_main
    assert len(new_main) <= 16 // 2, [len(op.args["results"]) for op in new_main if op is not None]
    assert not [op for op in ops if op.op == "claim"]
    for w, p in zip(workers, procs, strict=True):
        claimed = p.named("claimed")
        assert claimed and all(e["batch"] <= 4 for e in claimed)
        assert any(e["batch"] > 1 for e in claimed), claimed  # several items really went out in one push
        for e in p.named("done"):
            assert e["pushed"] is False  # committed locally, then published with the rest of its batch
            assert completions[e["id"]][0] == w.handle
    assert {i: claims_of(commons, i) for i in ids} == {i: [completions[i][0]] for i in ids}
    for w in workers:
        assert not list((w.home / "results").glob("*.json"))
        with Board(Home(w.home)) as b:
            assert b.pending() == []


# --- signals and crashes -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_sigterm_mid_job_releases_the_claim_and_exits_0_promptly(
    rigs: Rigs, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    [iid] = post_jobs(rigs.home("alice"), ["a slow job"])
    ollama.state.slow_s = 2.0  # every request to the fake takes 2 s: generation spans several seconds
    worker = WlProc(rigs.home("bob"), "infer", "worker", "--poll", "0.2", env={"OLLAMA_HOST": ollama.url})
    procs.append(worker)
    worker.wait_for("generating", timeout=20, id=iid)
    assert rigs.item("alice", iid).claimed_by == "bob"
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish(timeout=15) == 0, worker.output()
    assert time.monotonic() - sent < 5  # abandoned, not finished: the fake would still be answering
    assert worker.wait_for("abandoned", timeout=1)["released"] is True
    assert worker.wait_for("stopping", timeout=1)["signal"] == "SIGTERM"
    item = rigs.item("alice", iid)
    assert item.status == "open" and item.claimed_by is None
    assert [op.op for op in board_ops(rigs.commons) if op.id == iid] == ["post"]
    assert [(op.op, op.by) for op in lane_ops(rigs.commons, iid)] == [("claim", "bob"), ("unclaim", "bob")]
    assert "Traceback" not in worker.output()


@pytest.mark.timeout(30)
def test_a_second_signal_exits_at_once_naming_what_is_left() -> None:
    script = (
        "import os, signal, time\n"
        "from wl_infer.automation import StopSignals\n"
        "with StopSignals(lambda: 'the claim on w-0123456789 is left to expire') as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    assert stop.wait(5) and stop.signum == signal.SIGTERM\n"
        "    print('first signal: stopping cleanly', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(10)\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert done.returncode == 128 + signal.SIGINT
    assert done.stdout == "first signal: stopping cleanly\n"
    assert done.stderr == "wl: second signal: exiting now; the claim on w-0123456789 is left to expire\n"


@pytest.mark.timeout(90)
def test_sigkill_mid_job_is_taken_over_after_the_lease_expires(
    rigs: Rigs, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    # A 3 s lease on a ~4.5 s job: bob's renewals keep carol (polling all along) away until bob is killed.
    [iid] = post_jobs(rigs.home("alice"), ["a job longer than its lease"])
    ollama.state.slow_s = 1.5
    args = ("infer", "worker", "--poll", "0.2", "--lease-seconds", "3", "--max-jobs", "1")
    bob = WlProc(rigs.home("bob"), *args, env={"OLLAMA_HOST": ollama.url})
    procs.append(bob)
    bob.wait_for("generating", timeout=20, id=iid)
    claimed_at = time.monotonic()
    carol = WlProc(rigs.home("carol"), *args, env={"OLLAMA_HOST": ollama.url})
    procs.append(carol)
    time.sleep(max(0.0, claimed_at + 3.6 - time.monotonic()))  # past the first lease: renewals must hold it
    assert rigs.item("alice", iid).claimed_by == "bob"
    assert not carol.named("claimed")
    bob.proc.kill()
    bob.finish(timeout=10)
    taken = carol.wait_for("claimed", timeout=30, id=iid)
    assert taken["took_over_from"] == "bob"
    assert carol.finish(timeout=40) == 0, carol.output()
    carol.wait_for("done", timeout=1, id=iid)

    ops = [op for op in board_ops(rigs.commons) if op.id == iid]
    assert check_history(ops, allow_takeover=True) == Counter({iid: 1})
    # bob's claim and renewals lived on the item's lane; carol took the lane over once the lease ran out,
    # and her done carried her claim to main (the lane, spent, was dropped)
    assert [(op.op, op.by) for op in ops] == [("post", "alice"), ("done", "carol")]
    carried = json.loads(ops[-1].args["lane"]["op"])  # her latest claim or renewal on the lane
    assert carried["op"] in ("claim", "renew") and carried["by"] == "carol"
    who, ev = completion_of(rigs.home("alice"), iid)
    assert who == "carol" and ev.output == fake_completion("a job longer than its lease", 42, 8)[0]


@pytest.mark.timeout(90)
def test_a_completion_committed_while_the_remote_is_down_is_published_when_it_returns(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    with running_git_daemon(tmp_path / "srv") as daemon:
        make_commons(tmp_path / "srv")
        url = daemon.url("commons.git")
        poster, bob = join_rig(tmp_path, url, "poster"), join_rig(tmp_path, url, "bob")
        [iid] = post_jobs(poster.home, ["finished while the server was away"])
        ollama.state.slow_s = 1.0
        worker = WlProc(bob.home, "infer", "worker", "--poll", "0.2", "--idle-exit", "2", env={"OLLAMA_HOST": ollama.url})
        procs.append(worker)
        worker.wait_for("generating", timeout=20, id=iid)
        daemon.stop()
        assert worker.wait_for("done", timeout=20, id=iid)["pushed"] is False  # kept locally, not lost
        worker.wait_for("offline", timeout=10)
        daemon.start()
        synced = worker.wait_for("synced", timeout=20)
        assert f"done {iid}" in synced["replayed"] and synced["conflicted"] == []
        assert worker.finish(timeout=30) == 0, worker.output()
        who, ev = completion_of(poster.home, iid)
    assert who == "bob" and ev.output == fake_completion("finished while the server was away", 42, 8)[0]
    assert check_history(board_ops(tmp_path / "srv" / "commons.git")) == Counter({iid: 1})


@pytest.mark.timeout(60)
def test_an_offline_worker_with_nothing_to_publish_idles_out_and_once_says_why(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    # An unreachable remote finds no job: `--idle-exit` counts it (automation must not hang on a dead
    # server), and `--once` stops with no_job, reason offline. Holding a result to publish, a worker waits
    # instead: the test above.
    with running_git_daemon(tmp_path / "srv") as daemon:
        make_commons(tmp_path / "srv")
        bob = join_rig(tmp_path, daemon.url("commons.git"), "bob")
    worker = WlProc(bob.home, "infer", "worker", "--poll", "0.2", "--idle-exit", "1", env={"OLLAMA_HOST": ollama.url})
    procs.append(worker)
    worker.wait_for("offline", timeout=20)
    worker.wait_for("idle_exit", timeout=20)
    assert worker.finish(timeout=20) == 0, worker.output()
    once = subprocess.run([WL, "--json", "infer", "worker", "--once"], env={**bob.env(), "OLLAMA_HOST": ollama.url},
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    events = orjson.loads(once.stdout)["events"]
    assert [(e["event"], e.get("reason")) for e in events][-2:] == [("no_job", "offline"), ("stopped", None)]


@pytest.mark.timeout(90)
def test_a_result_whose_fold_lost_every_race_stays_on_its_lane_and_the_loop_folds_it_later(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    # Another writer lands a commit on main before each push after the claim: the result still goes onto its
    # lane (a push nobody else's commit on main can refuse), so it is submitted and readers see it in review;
    # the worker's own fold into main loses every race, and its loop folds it once main is quiet again.
    with poster_and_bob(tmp_path) as (server, repo, poster, bob):
        [iid] = post_jobs(poster.home, ["submitted on the second go"])
        first_push = server.pushes + 1

        def interfere(environ: dict[str, Any], start_response: Any, app: Any) -> Any:
            if first_push < server.pushes <= first_push + MAX_ATTEMPTS:  # the claim lands, main moves under the rest
                commit_file_to_remote(repo, f"noise/{server.pushes}", b"x\n")
            return app(environ, start_response)

        server.on_receive_pack = interfere
        worker = WlProc(bob.home, "infer", "worker", "--poll", "0.2", env={"OLLAMA_HOST": ollama.url})
        procs.append(worker)
        assert worker.wait_for("done", timeout=40, id=iid)["pushed"] is True  # on its lane
        assert not [op for op in main_ops(repo) if op.id == iid and op.op == "done"]  # main does not hold it yet
        assert remote_item(repo, iid).status == "in_review" and not (bob.home / "results" / f"{iid}.json").exists()
        folded = worker.wait_for("synced", timeout=60, folded=[iid])
        assert folded["folded"] == [iid]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=20) == 0, worker.output()
        who, ev = completion_of(poster.home, iid)
    assert who == "bob" and ev.output == fake_completion("submitted on the second go", 42, 8)[0]
    assert check_history(board_ops(repo)) == Counter({iid: 1})


def folders_of(commons: Path) -> dict[str, str]:
    """Item → the rig whose commit on main carried its `done` (a fold's signer, or the done's own author)."""
    from board.folds import carried

    out: dict[str, str] = {}
    for _, op in remote_ops(commons):
        if op is not None and op.op == "fold":
            out.update({str(d.id): op.by for d in carried(op)})
        elif op is not None and op.op == "done":
            out[str(op.id)] = op.by
    return out


@pytest.mark.timeout(90)
def test_a_worker_leaves_its_result_to_the_next_fold_while_others_move_main_and_folds_what_is_left_on_stop(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    # Fold manners (board/folding.Courtesy): the poster moved main just before the worker claimed, so the
    # worker's result goes onto its lane with no fold of its own racing the poster for main; the poster's next
    # mutation carries it. A result still on its lane when the worker stops is folded by the worker on its way
    # out, main busy or not. `--fold-quiet 0` is the control: the worker folds at once.
    with poster_and_bob(tmp_path) as (server, repo, poster, bob):
        env = {"OLLAMA_HOST": ollama.url}
        worker = WlProc(bob.home, "infer", "worker", "--poll", "0.2", "--fold-quiet", "30", env=env)
        procs.append(worker)
        worker.wait_for("idle", timeout=30)  # its first fetch is only the baseline: it says nothing about when
        [first] = post_jobs(poster.home, ["left to the poster's fold"])
        worker.wait_for("done", timeout=40, id=first)
        pushes = server.pushes
        time.sleep(1.0)  # a second of polls, main quiet for less than the 30 s: the worker does not fold
        assert server.pushes == pushes and first not in folders_of(repo)
        with Board(Home(poster.home)) as b:
            b.refresh()
            assert b.view().item(first).status == "in_review"  # readers see the result on its lane meanwhile
        [second] = post_jobs(poster.home, ["folded by the worker as it stops"])  # this post carries `first`
        assert folders_of(repo) == {first: "poster"}
        worker.wait_for("done", timeout=40, id=second)
        assert second not in folders_of(repo)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=30) == 0, worker.output()
        assert folders_of(repo) == {first: "poster", second: "bob"}

        control = WlProc(bob.home, "infer", "worker", "--poll", "0.2", "--fold-quiet", "0", env=env)
        procs.append(control)
        control.wait_for("idle", timeout=30)
        [third] = post_jobs(poster.home, ["folded at once"])
        control.wait_for("done", timeout=40, id=third)
        assert folders_of(repo)[third] == "bob"  # no manners: its own fold, straight away
        control.proc.send_signal(signal.SIGTERM)
        assert control.finish(timeout=30) == 0, control.output()
    assert check_history(board_ops(repo)) == Counter({first: 1, second: 1, third: 1})


class NeverCarries:
    """A participant's client that moves main but never folds anyone's lane results: manners that always defer
    (board/folding.add_fold asks them)."""

    def defer(self, handle: str | None, waiting: list[str]) -> bool:
        return True

    def fetched(self, moved: bool, at: str | None = None, commits: int = 1) -> None:
        pass

    def moved(self) -> None:
        pass


@pytest.mark.timeout(90)
def test_a_worker_folds_its_result_itself_when_main_keeps_moving_without_carrying_it(
    tmp_path: Path, ollama: FakeOllama, procs: list[WlProc]
) -> None:
    # A participant keeps moving main (valid signed posts, one every fifth of a second) and never carries the
    # worker's lane result: the worker's manners keep deferring while main is busy, but only for MAX_DEFER
    # quiet times (here 10 x 0.3 s); then it folds the result itself, main still busy.
    from board.ids import new_item_id, utcnow

    with poster_and_bob(tmp_path) as (server, repo, poster, bob):
        worker = WlProc(bob.home, "infer", "worker", "--poll", "0.2", "--fold-quiet", "0.3",
                        env={"OLLAMA_HOST": ollama.url})
        procs.append(worker)
        worker.wait_for("idle", timeout=30)
        [iid] = post_jobs(poster.home, ["folded by its worker after all"])
        stop = threading.Event()
        posted: list[str] = []

        def busy() -> None:
            with Board(Home(poster.home)) as b:
                b.courtesy = NeverCarries()
                while not stop.is_set() and len(posted) < 300:
                    item_id = new_item_id(f"noise {len(posted)}", utcnow())
                    b.mutate(b.new_op("post", item_id, title=f"noise {len(posted)}"))
                    posted.append(item_id)
                    stop.wait(0.2)

        noise = threading.Thread(target=busy, daemon=True)
        noise.start()
        try:
            worker.wait_for("done", timeout=40, id=iid)
            deadline = time.monotonic() + 30
            while iid not in folders_of(repo) and time.monotonic() < deadline:
                time.sleep(0.2)
            busy_while = len(posted)
            assert folders_of(repo).get(iid) == "bob"  # its own fold, while main was still moving
            assert noise.is_alive() and busy_while >= 5
        finally:
            stop.set()
            noise.join(timeout=30)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=30) == 0, worker.output()
    assert check_history(board_ops(repo)) == Counter({iid: 1})


# --- events, skips, failures, recovery (in-process: the same command, without process start-up) -------------
def worker_events(rigs: Rigs, handle: str, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """The events of one `--json` worker run: one document for `--once`, else one JSON line per event."""
    res = rigs.wl(handle, "--json", "infer", "worker", "--poll", "0.05", *args)
    if "--once" in args:
        doc = orjson.loads(res.stdout)  # the whole of stdout is one document
        assert set(doc) == {"events", "summary"} and doc["summary"]["exit_code"] == res.exit_code
        stopped = doc["events"][-1]
        assert stopped["event"] == "stopped" and all(doc["summary"][k] == v for k, v in stopped.items()
                                                     if k not in ("event", "at"))
        return res.exit_code, list(doc["events"])
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    return res.exit_code, [orjson.loads(ln) for ln in lines]  # every line parses as one JSON event


@pytest.mark.timeout(60)
def test_json_events_and_what_a_worker_skips(rigs: Rigs) -> None:
    bad = rigs.wl_json("alice", "post", "--title", "broken", "--type", "inference", "--description", "not json")[1]["id"]
    [foreign] = post_jobs(rigs.home("alice"), ["pinned elsewhere"], model_digest="sha256:" + "ab" * 32)
    [absent] = post_jobs(rigs.home("alice"), ["no such model"], model="absent:1b")
    [other] = post_jobs(rigs.home("alice"), ["another backend"], backend="openai")
    [good] = post_jobs(rigs.home("alice"), ["what is 1+1"])
    code, events = worker_events(rigs, "bob", "--backend", "ollama", "--idle-exit", "0.3")
    assert code == 0
    names = [e["event"] for e in events]
    assert names[0] == "started" and names[-2:] == ["idle_exit", "stopped"]
    assert all(isinstance(e["at"], str) and e["at"].endswith("Z") for e in events)
    skipped = {e["id"]: e["reason"] for e in events if e["event"] == "skipped"}
    assert names.count("skipped") == 3  # reported once each, however many polls see them
    assert set(skipped) == {bad, foreign, absent}  # `other` is filtered out by --backend, silently
    assert "not valid JSON" in skipped[bad] and "pinned weights" in skipped[foreign] and "absent:1b" in skipped[absent]
    for name in ("claimed", "generating", "generated", "done"):
        assert any(e["event"] == name and e.get("id") == good for e in events), name
    claimed = next(e for e in events if e["event"] == "claimed")
    assert claimed["retries"] == 0 and claimed["lease_seconds"] == 1800 and claimed["took_over_from"] is None
    assert rigs.item("alice", good).status == "in_review"
    for iid in (bad, foreign, absent, other):
        assert rigs.item("alice", iid).status == "open"

    code, events = worker_events(rigs, "bob", "--once", "--backend", "ollama")
    assert code == 0 and [e["event"] for e in events][-2:] == ["no_job", "stopped"]  # nothing to do is fine


@pytest.mark.timeout(60)
def test_a_failing_job_is_released_and_once_exits_1(rigs: Rigs, ollama: FakeOllama) -> None:
    [iid] = post_jobs(rigs.home("alice"), ["the runner crashes"])
    ollama.state.fail_status, ollama.state.fail_paths = 500, ("/api/generate",)
    code, events = worker_events(rigs, "bob", "--once")
    assert code == 1
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["id"] == iid and failed["released"] is True and "boom" in failed["error"]
    item = rigs.item("alice", iid)
    assert item.status == "open" and item.claimed_by is None
    # a looping worker does not retry what failed here: it takes the job once, then idles out
    code, events = worker_events(rigs, "bob", "--idle-exit", "0.3", "--max-jobs", "5")
    assert code == 0 and sum(e["event"] == "claimed" for e in events) == 1


@pytest.mark.timeout(60)
def test_startup_resubmits_saved_results_and_sets_aside_what_cannot_be(rigs: Rigs, ollama: FakeOllama) -> None:
    from wl_infer.backends import get_backend
    from wl_infer.jobs import _save_result, build_evidence

    mine, lost = post_jobs(rigs.home("alice"), ["crashed after generating", "taken over meanwhile"])
    assert rigs.wl("bob", "claim", mine).exit_code == 0
    assert rigs.wl("carol", "claim", lost).exit_code == 0
    backend = get_backend("ollama", ollama_host=ollama.url)
    with rigs.board("bob") as b:  # what run_item leaves behind when the process dies before submitting
        for iid, prompt in ((mine, "crashed after generating"), (lost, "taken over meanwhile")):
            ev, blobs = build_evidence(b, iid, Job(prompt=prompt, model=MODEL, max_tokens=8),
                                       backend.generate(Job(prompt=prompt, model=MODEL, max_tokens=8)))  # fmt: skip
            _save_result(b, iid, ev, None)
    results = rigs.home("bob") / "results"
    code, events = worker_events(rigs, "bob", "--once", "--model", "none-at-all")
    assert code == 0
    assert next(e for e in events if e["event"] == "resubmitted")["id"] == mine
    assert next(e for e in events if e["event"] == "unsubmittable")["file"] == f"{lost}.json"
    assert not list(results.glob("*.json")) and (results / "unsubmitted" / f"{lost}.json").exists()
    assert rigs.item("alice", mine).status == "in_review"
    who, ev = completion_of(rigs.home("alice"), mine)
    assert who == "bob" and ev.output == fake_completion("crashed after generating", 42, 8)[0]
    assert rigs.item("alice", lost).claimed_by == "carol"


# --- the real engine -------------------------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.timeout(600)
def test_llama_worker_runs_three_jobs_with_one_model_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    llama_backend = pytest.importorskip("wl_infer.backends.llama_cpp")
    loads: list[object] = []
    original = llama_backend._Engine

    class CountingEngine(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            loads.append(args[-1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llama_backend, "_Engine", CountingEngine)
    rigs = make_rigs(tmp_path, ("alice", "bob"))
    ids = []
    for q in ("2+2", "3+3", "4+4"):
        code, data = rigs.wl_json("alice", "infer", "post", "--prompt", f"Question: What is {q}?\nAnswer:",
                                  "--model", "gemma3:270m", "--backend", "llama-cpp", "--max-tokens", "4")  # fmt: skip
        assert code == 0, data
        ids.append(data["id"])
    code, events = worker_events(rigs, "bob", "--max-jobs", "3", "--threads", "2")
    assert code == 0, events
    assert sorted(e["id"] for e in events if e["event"] == "done") == sorted(ids)
    assert len(loads) == 1  # the model was loaded once and kept for all three jobs
    for iid in ids:
        who, ev = completion_of(rigs.home("alice"), iid)
        assert who == "bob" and ev.tokens and len(ev.tokens) <= 4 and ev.backend == "llama-cpp"
