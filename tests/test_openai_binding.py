"""Binding an openai-backend result to weights (issue 13), end to end through `wl` on a bare commons.

The OpenAI-compatible server is tests/fake_servers.py's on 127.0.0.1 (none can be installed here); it lists
models in `/v1/models` and describes one in `/v1/models/{id}`, with a digest only where the test gives one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fake_servers import FakeOpenAI
from infer_helpers import Rigs, make_rigs, post

PINNED = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models={"plain-model": {}, "pinned-model": {"digest": PINNED}}) as srv:
        yield srv


@pytest.fixture
def rigs(tmp_path: Path, server: FakeOpenAI) -> Rigs:
    return make_rigs(tmp_path, env={"WL_OPENAI_BASE_URL": server.url})


def test_a_digest_the_server_reports_binds_the_result(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", "pinned-model", "--backend", "openai")
    code, posted = rigs.wl_json("alice", "infer", "status", iid)
    assert code == 0 and PINNED in orjson.dumps(posted).decode()  # pinned at post time, from the server
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    code, verified = rigs.wl_json("carol", "infer", "verify", iid)
    assert code == 0 and verified["verdict"] == "VERIFIED" and verified["weights"] == "bound"


def test_a_supplied_digest_the_server_contradicts_refuses_to_run(rigs: Rigs, server: FakeOpenAI) -> None:
    iid = post(rigs, "alice", "--prompt", "p", "--model", "pinned-model", "--backend", "openai",
               "--model-digest", OTHER.upper().replace("SHA256:", "sha256:"))  # fmt: skip
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1, res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("wl: error:") and f"has digest {PINNED}, but the job pins {OTHER}" in line
    assert not [r for r in server.state.requests if r.path == "/v1/completions"]  # refused before generating
    item = rigs.item("alice", iid)
    assert item.status == "open" and item.claimed_by is None  # the claim was released
    # a digest the server cannot confirm is refused too, with its own reason
    iid = post(rigs, "alice", "--prompt", "p", "--model", "plain-model", "--backend", "openai",
               "--model-digest", PINNED)  # fmt: skip
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1 and "reports no weights digest for 'plain-model'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_unpinned_result_verifies_but_is_reported_unbound(rigs: Rigs) -> None:
    code, data = rigs.wl_json("alice", "infer", "post", "--prompt", "p", "--model", "plain-model", "--backend", "openai")
    assert code == 0 and data["job"].get("model_digest") is None
    assert any("reports no digest" in w for w in data["warnings"])
    iid = data["id"]
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    res = rigs.wl("carol", "infer", "verify", iid, "--no-record")
    assert res.exit_code == 0 and "✓ VERIFIED" in res.stdout
    assert "Weights:  unbound" in res.stdout
    code, verified = rigs.wl_json("carol", "infer", "verify", iid, "--no-record")
    assert code == 0 and verified["weights"] == "unbound"


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "ab" * 16, "ab" * 32])
def test_a_malformed_digest_is_a_usage_error(rigs: Rigs, digest: str) -> None:
    res = rigs.wl("alice", "infer", "post", "--prompt", "p", "--model", "plain-model", "--backend", "openai",
                  "--model-digest", digest)  # fmt: skip
    assert res.exit_code == 2 and "sha256: followed by 64 hex digits" in res.stderr
