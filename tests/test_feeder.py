"""`wl infer feed`: the feeder bot claims items under its rig's handle and starts a run process for each.

The Ollama server cannot be installed here; the runs use the ollama backend against a small HTTP server on
127.0.0.1 that speaks Ollama's API (tests/fake_servers.py). The run processes are real `wl infer run
--skip-claim` processes (or a `--command` template), the commons a real bare repository.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fake_servers import FakeOllama, fake_completion
from infer_helpers import Rigs, make_rigs
from remotes import claims_of, lane_ops
from test_worker import WlProc, board_ops, check_history, completion_of, post_jobs

from board.errors import InvalidId, UsageError
from wl_infer.codec import output_hash
from wl_infer.feeder import command_for, parse_template

MODEL = "llama3.2:1b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob"), env={"OLLAMA_HOST": ollama.url})


@pytest.fixture
def procs() -> Iterator[list[WlProc]]:
    started: list[WlProc] = []
    yield started
    for p in started:
        p.kill()


@pytest.mark.timeout(120)
def test_two_slots_finish_the_jobs_and_release_the_one_that_fails(rigs: Rigs) -> None:
    prompts = [f"feed me {i}" for i in range(4)]
    good = post_jobs(rigs.home("alice"), prompts)
    [failing] = post_jobs(rigs.home("alice"), ["a model nobody has"], model="absent:1b")
    res = rigs.wl("bob", "--json", "infer", "feed", "--workers", "2", "--poll", "0.1", "--idle-exit", "0.5")
    assert res.exit_code == 0, res.output
    events = [orjson.loads(ln) for ln in res.stdout.splitlines() if ln.strip()]
    names = [e["event"] for e in events]
    assert names[0] == "started" and names[-1] == "stopped"

    running = [e["running"] for e in events if e["event"] == "dispatched"]
    assert max(running) == 2  # two at a time, never more
    assert any(e.get("batch", 1) == 2 for e in events if e["event"] == "claimed")  # both slots in one push
    for e in events:
        if e["event"] == "dispatched":
            assert e["argv"][-3:] == ["run", e["id"], "--skip-claim"] and str(rigs.home("bob")) in e["argv"]
    done = {e["id"]: e for e in events if e["event"] == "done"}
    assert set(done) == set(good)
    failed = [e for e in events if e["event"] == "failed"]
    assert [(e["id"], e["exit_code"], e["released"]) for e in failed] == [(failing, 1, True)]
    assert "absent:1b" in failed[0]["error"]

    ops = board_ops(rigs.commons)
    assert check_history(ops) == Counter({i: 1 for i in good})
    claims = {i: claims_of(rigs.commons, i) for i in [*good, failing]}
    assert claims == {i: ["bob"] for i in [*good, failing]}  # each item dispatched exactly once
    assert all(op.by == "bob" for op in ops if op.op in ("claim", "done", "unclaim"))
    for iid, prompt in zip(good, prompts, strict=True):
        who, ev = completion_of(rigs.home("alice"), iid)
        assert who == "bob" and ev.output == fake_completion(prompt, 42, 8)[0]
        assert done[iid]["output_hash"] == output_hash(ev.output)
    item = rigs.item("alice", failing)
    assert item.status == "open" and item.claimed_by is None
    assert (rigs.home("bob") / "feed" / f"{failing}.log").exists()  # the failed run's output is kept


@pytest.mark.timeout(60)
def test_feeder_renews_running_claims_and_sigterm_stops_runs_and_releases(rigs: Rigs, procs: list[WlProc]) -> None:
    first, second = post_jobs(rigs.home("alice"), ["runs for a long time", "waits for a free slot"])
    command = f"{sys.executable} -c 'import time; time.sleep(60)' {{id}}"
    feeder = WlProc(rigs.home("bob"), "infer", "feed", "--workers", "1", "--poll", "0.2", "--lease-seconds", "3",
                    "--command", command, env={})  # fmt: skip
    procs.append(feeder)
    dispatched = feeder.wait_for("dispatched", timeout=20)
    assert dispatched["argv"][-1] == dispatched["id"]
    running_id = dispatched["id"]
    deadline = time.monotonic() + 15
    while sum(op.op == "renew" for op in lane_ops(rigs.commons, running_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    renewals = lane_ops(rigs.commons, running_id)  # the claim and its renewals live on the item's lane
    assert sum(op.op == "renew" and op.by == "bob" for op in renewals) >= 2
    assert [op.id for op in board_ops(rigs.commons) if op.op == "claim"] == []
    assert {i: claims_of(rigs.commons, i) for i in (first, second)} == {running_id: ["bob"], **(
        {} if running_id == second else {second: []}), **({} if running_id == first else {first: []})}  # slot busy
    sent = time.monotonic()
    feeder.proc.send_signal(signal.SIGTERM)
    assert feeder.finish(timeout=20) == 0, feeder.output()
    assert time.monotonic() - sent < 8
    abandoned = feeder.wait_for("abandoned", timeout=1, id=running_id)
    assert abandoned["released"] is True
    with pytest.raises(ProcessLookupError):
        os.kill(dispatched["pid"], 0)  # the run was stopped, not left behind
    for iid in (first, second):
        item = rigs.item("alice", iid)
        assert item.status == "open" and item.claimed_by is None


def test_command_templates_are_argv_lists_with_validated_ids(rigs: Rigs, tmp_path: Path) -> None:
    template = parse_template("ssh gpu1 'wl infer run' {id} --skip-claim --note 'id is {id}'")
    argv = command_for(template, "w-0123456789", tmp_path)
    assert argv == ["ssh", "gpu1", "wl infer run", "w-0123456789", "--skip-claim", "--note", "id is w-0123456789"]
    for bad in ("../x", "w-$(reboot)", "w-0123456789; rm -rf /", "w-0123456789 --evil"):
        with pytest.raises(InvalidId):
            command_for(template, bad, tmp_path)
    default = command_for(parse_template(None), "w-0123456789", tmp_path)
    assert default[-5:] == ["--json", "infer", "run", "w-0123456789", "--skip-claim"]
    assert default[default.index("--home") + 1] == str(tmp_path)
    for wrong in ("echo hi", "", "unterminated 'quote {id}"):
        with pytest.raises(UsageError):
            parse_template(wrong)
    res = rigs.wl("bob", "infer", "feed", "--command", "echo no id here")
    assert res.exit_code == 2 and res.stderr.startswith("wl: error: --command must name the item as {id}")
