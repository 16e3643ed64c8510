"""`wl serve` as a real process: Server-Sent Events carry another rig's push to an open connection, and the
server stops cleanly on SIGINT with a stream still open."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from infer_helpers import Rigs, make_rigs
from web_helpers import op, post_items, row_ids, running_serve

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob"))


def _events(stream: httpx.Response):  # type: ignore[no-untyped-def]
    kind = None
    for line in stream.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "sync":
            yield orjson.loads(line[6:])


def test_sse_delivers_another_rigs_push_and_the_page_follows(rigs: Rigs) -> None:
    [a] = post_items(rigs, "alice", ["watched item"])
    with running_serve(rigs.home("alice"), poll=0.5) as url, httpx.Client(base_url=url, timeout=15) as client:
        page = client.get("/")
        assert page.status_code == 200 and row_ids(page.text) == [a]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        with client.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _events(stream)
            first = next(events)
            assert first["synced_at"] and first["sync_error"] is None
            op(rigs, "bob", "claim", a)
            pushed = time.monotonic()
            for event in events:
                if event["head"] != first["head"]:
                    break
                assert time.monotonic() - pushed < 10, "no update within 10 s"
        text = client.get("/").text
        assert f'data-head="{event["head"]}"' in text and '/rigs/bob">bob<' in text
        assert client.get("/api/status").json()["head"] == event["head"]


def test_serve_refuses_a_board_that_is_not_there(tmp_path: Path) -> None:
    import subprocess

    from remotes import WL

    res = subprocess.run([WL, "serve", "--port", "0"], env={"WL_HOME": str(tmp_path / "none"), "PATH": "/usr/bin"},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.startswith("wl: error:") and "Traceback" not in res.stderr
