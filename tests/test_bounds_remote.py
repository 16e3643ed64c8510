"""Issue 10: hostile backend servers (tests/hostile_servers.py, on 127.0.0.1) cannot hold or flood a worker.

Each case runs the real `wl infer run` (a subprocess where time or memory is the point) against a server that
drips, floods, sends invalid JSON or reports other weights; the claim is released (or never made) and the
command says so in one line.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hostile_servers import FLOOD_BYTES, HostileServer
from infer_helpers import Rigs, make_rigs, wait_with_peak_rss
from remotes import WL

MODEL = "tiny:1b"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob"))


def post_job(rigs: Rigs, backend: str = "ollama", **extra: Any) -> str:
    body = {"prompt": "say something", "model": MODEL, "seed": 42, "max_tokens": 8, "backend": backend, **extra}
    code, data = rigs.wl_json("alice", "post", "--title", "infer: hostile server", "--type", "inference",
                              "--description", orjson.dumps(body).decode())  # fmt: skip
    assert code == 0, data
    return str(data["id"])


def run_process(rigs: Rigs, server: HostileServer, iid: str, *flags: str) -> tuple[int, str, float, int]:
    """(exit code, stderr, seconds, peak RSS in KiB) of a real `wl infer run` against the server."""
    env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"}
    env.update({"OLLAMA_HOST": server.url, "WL_OPENAI_BASE_URL": server.url})
    started = time.monotonic()
    proc = subprocess.Popen([WL, "--home", str(rigs.home("bob")), "infer", "run", iid, *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        code, peak = wait_with_peak_rss(proc)
    finally:
        proc.kill()
    assert proc.stderr is not None
    return code, proc.stderr.read(), time.monotonic() - started, peak


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_a_dripping_server_is_cut_off_at_the_job_deadline(rigs: Rigs, mode: str) -> None:
    iid = post_job(rigs)
    with HostileServer(mode, MODEL, DIGEST.removeprefix("sha256:")) as server:
        code, err, took, _ = run_process(rigs, server, iid, "--limit-seconds", "5")
    assert code == 1
    assert err.strip().splitlines() == [
        f"wl: error: inference failed for {iid}: limits: job stopped: the server's reply ran past the job's "
        "wall-clock deadline (limit 5 s); the claim was released"
    ]
    assert took < 30  # a per-read timeout (300 s) would have let the drip go on for minutes
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_flood_is_cut_off_at_the_byte_cap_while_reading(rigs: Rigs, backend: str) -> None:
    iid = post_job(rigs, backend)
    with HostileServer("flood", MODEL, DIGEST.removeprefix("sha256:")) as server:
        code, err, _, rss_kib = run_process(rigs, server, iid, "--limit-output-bytes", "65536")
        sent = server.sent
    assert code == 1
    assert err.strip().splitlines() == [
        f"wl: error: inference failed for {iid}: limits: job stopped: the server's reply is larger than this "
        f"worker reads (limit {65536 * 6 + 64 * 1024}); the claim was released"
    ]
    assert sent < FLOOD_BYTES // 4  # reading stopped: the server could not push its 200 MB
    assert rss_kib < 400 * 1024  # the process never held the flood (it was ~1 GB before)
    assert rigs.item("alice", iid).status == "open"
    with rigs.board("alice") as b:
        b.refresh()
        assert b.view().completion(iid) is None  # nothing reached the commons


@pytest.mark.timeout(60)
def test_invalid_json_from_the_server_fails_in_one_line_and_releases(rigs: Rigs) -> None:
    iid = post_job(rigs)
    with HostileServer("invalid", MODEL, DIGEST.removeprefix("sha256:")) as server:
        res = rigs.wl("bob", "infer", "run", iid, env={"OLLAMA_HOST": server.url})
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wl: error: inference failed for {iid}: ollama: generation failed")
    assert lines[0].endswith("; the claim was released")
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(60)
def test_a_server_reporting_other_weights_is_refused_before_the_claim(rigs: Rigs) -> None:
    iid = post_job(rigs, model_digest=DIGEST)
    with HostileServer("digest", MODEL, DIGEST.removeprefix("sha256:")) as server:
        res = rigs.wl("bob", "infer", "run", iid, env={"OLLAMA_HOST": server.url})
        generations = server.generations
    assert res.exit_code == 1
    assert res.stderr.strip() == (f"wl: error: ollama: model {MODEL!r} here has digest sha256:{'f' * 64}, "
                                  f"but the job pins {DIGEST}")  # fmt: skip
    assert generations == 0
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(90)
def test_a_worker_releases_a_job_stopped_at_a_limit_once_and_then_skips_it(rigs: Rigs) -> None:
    stopped = post_job(rigs)
    refused = post_job(rigs, max_tokens=100_000)
    with HostileServer("flood", MODEL, DIGEST.removeprefix("sha256:")) as server:
        res = rigs.wl("bob", "--json", "infer", "worker", "--poll", "0.05", "--idle-exit", "1",
                      "--limit-output-bytes", "1000", env={"OLLAMA_HOST": server.url})  # fmt: skip
        generations = server.generations
    assert res.exit_code == 0, res.output
    events = [orjson.loads(line) for line in res.stdout.splitlines() if line.strip()]
    claims = [e["id"] for e in events if e["event"] == "claimed"]
    assert claims == [stopped] and generations == 1  # the flooded job once; the refused one never claimed
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["released"] is True and "larger than this worker reads" in failed[0]["error"]
    skipped = [e for e in events if e["event"] == "skipped"]
    assert [e["id"] for e in skipped] == [refused]
    assert "max_tokens is larger than this worker allows (limit 4096, job 100000)" in skipped[0]["reason"]
    assert rigs.item("alice", stopped).status == "open" and rigs.item("alice", refused).status == "open"
