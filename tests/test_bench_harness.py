"""The scale benchmarks' instruments count what they claim (tests/benchmarks/: counting_servers, bench_scale):
server-side push and fetch counts on git daemon and git http-backend, the post-receive log of accepted ref
updates (a lane ref deleted afterwards still counts), the exactly-once check, and FakeOllama's compute time.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

from bench_push_cost import LaneClient  # noqa: E402
from bench_scale import check_once, done_counts  # noqa: E402
from counting_servers import (  # noqa: E402
    accepted_pushes,
    accepted_updates,
    install_update_log,
    landed_commits,
    serving,
)
from fake_servers import FakeOllama  # noqa: E402
from remotes import have_git_daemon, join_rig, make_commons, remote_head  # noqa: E402

KINDS = ["daemon", "http-backend"]


@pytest.mark.parametrize("kind", KINDS)
def test_server_counts_every_push_and_logs_what_landed(tmp_path: Path, kind: str) -> None:
    if kind == "daemon" and not have_git_daemon():
        pytest.skip("git daemon is not installed")
    with serving(kind, tmp_path / "srv") as server:
        repo = make_commons(tmp_path / "srv")
        install_update_log(repo)
        rig = join_rig(tmp_path, server.url("commons.git"), "alice")
        item = rig.post("one thing")
        # a lane-style create, then the same ref again: exactly one push each, one accepted, one update
        before, head, n_updates, n_pushes = server.counts(), remote_head(repo), len(accepted_updates(repo)), \
            accepted_pushes(repo)  # fmt: skip
        lanes = LaneClient(server.url("commons.git"), tmp_path / "lanes.git")
        ref = b"refs/wl/claims/bench-test"
        first = lanes.new_commit()
        assert lanes.create(ref, first) is True
        assert lanes.create(ref, lanes.new_commit()) is False  # create-if-absent: the second one loses
        lanes.close()
        assert (server.counts() - before)["receive-pack"] == 2  # the lost one stopped at the advertisement
        assert accepted_pushes(repo) - n_pushes == 1
        assert accepted_updates(repo)[n_updates:] == [(b"0" * 40, first, ref.decode())]
        assert landed_commits(repo, accepted_updates(repo)[n_updates:], [head]) == 1
        # the board's own claim and done (however many pushes they take): every push counted, all accepted
        before, n_updates, n_pushes = server.counts(), len(accepted_updates(repo)), accepted_pushes(repo)
        rig.claim(item)
        rig.done(item, "https://example.invalid/evidence")
        counts = server.counts() - before
        assert (
            counts["receive-pack"] == accepted_pushes(repo) - n_pushes >= 2
        )  # no contention: nothing refused
        assert counts["upload-pack"] >= 2  # each mutation fetched first
        updates = accepted_updates(repo)[n_updates:]
        assert "refs/heads/main" in [u[2] for u in updates]
        assert landed_commits(repo, updates, [head, first]) >= 2  # the claim and the done
        assert done_counts(repo)[item] == 1
        assert check_once(repo, [item]) == []


def test_exactly_once_check_reports_what_is_not_done(tmp_path: Path) -> None:
    repo = make_commons(tmp_path)
    rig = join_rig(tmp_path, str(repo), "bob")
    done, open_ = rig.post("finished"), rig.post("never taken")
    rig.claim(done)
    rig.done(done, "https://example.invalid/evidence")
    assert check_once(repo, [done]) == []
    [problem] = check_once(repo, [done, open_])
    assert problem.startswith(f"{open_}: open, 0 done op(s)")


def test_fake_ollama_work_s_delays_generation_only(tmp_path: Path) -> None:
    with FakeOllama(models={"m": {}}) as fake:
        fake.state.work_s = 0.4
        body = orjson.dumps({"model": "m", "prompt": "hi", "raw": True, "stream": False})
        t = time.monotonic()
        req = urllib.request.Request(f"{fake.url}/api/generate", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert orjson.loads(r.read())["done"] is True
        assert time.monotonic() - t >= 0.4
        assert fake.state.requests[-1].path == "/api/generate"
