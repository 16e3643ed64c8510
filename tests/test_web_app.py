"""`wl serve` through an HTTP client, on real boards: a bare commons on disk and three rigs with their own homes.

Other rigs mutate the commons while the app runs; the app's own poll loop fetches it. Nothing is mocked.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from infer_helpers import Rigs, make_rigs
from remotes import commit_file_to_remote
from web_helpers import XSS_ONERROR, XSS_SCRIPT, client_for, op, post_items, row_ids, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path)


def test_board_lists_items_with_status_type_poster_and_claimer(rigs: Rigs) -> None:
    [a, b] = post_items(rigs, "alice", ["fix the parser", "write the docs"], type="docs")
    [c] = post_items(rigs, "bob", ["a bug report"], type="bug")
    op(rigs, "bob", "claim", a, lease_seconds=1800)
    with client_for(rigs.home("alice")) as (client, _):
        page = client.get("/")
        assert page.status_code == 200
        assert set(row_ids(page.text)) == {a, b, c}
        row = re.search(rf'<tr id="row-{a}".*?</tr>', page.text, re.S)
        assert row is not None
        text = row.group(0)
        assert "claimed" in text and '/rigs/bob">bob<' in text and '/rigs/alice">alice<' in text
        assert re.search(r"(29|30)m left", text)  # the lease, counted down from the 30-minute claim
        assert "fix the parser" in text and ">docs<" in text


def test_filters_search_and_mine(rigs: Rigs) -> None:
    [a, b] = post_items(rigs, "alice", ["alpha task", "beta task"])
    [c] = post_items(rigs, "bob", ["gamma bug"], type="bug")
    op(rigs, "carol", "claim", b)
    with client_for(rigs.home("alice")) as (client, _):
        assert row_ids(client.get("/?status=claimed").text) == [b]
        assert row_ids(client.get("/?type=bug").text) == [c]
        assert set(row_ids(client.get("/?q=TASK").text)) == {a, b}
        assert row_ids(client.get("/?q=alpha+task").text) == [a]
        assert row_ids(client.get("/?worker=carol").text) == [b]
        assert set(row_ids(client.get("/?mine=1").text)) == {a, b}  # alice posted both; bob's is not hers
        # malformed filter values are ignored, never an error
        assert client.get("/?status=<x>&type=../..&worker=Not A Handle&page=-3&per_page=7").status_code == 200


def test_pagination_walks_every_item_once(rigs: Rigs) -> None:
    ids = post_items(rigs, "alice", [f"item {i}" for i in range(30)])
    with client_for(rigs.home("alice")) as (client, _):
        seen: list[str] = []
        for page in (1, 2):
            text = client.get(f"/?per_page=25&page={page}").text
            seen += row_ids(text)
        assert sorted(seen) == sorted(ids) and len(seen) == 30
        first = client.get("/?per_page=25").text
        assert 'rel="next"' in first and "page 1 of 2" in first
        api = client.get("/api/items?per_page=25&page=2").json()
        assert (api["page"], api["pages"], api["total"], len(api["items"])) == (2, 2, 30, 5)


def test_hostile_titles_are_escaped_and_scripts_are_forbidden(rigs: Rigs) -> None:
    [s, o] = post_items(rigs, "bob", [XSS_SCRIPT, XSS_ONERROR], description=XSS_ONERROR, tags=["<b>x</b>"])
    with client_for(rigs.home("alice")) as (client, _):
        for path in ("/", f"/items/{s}", f"/items/{o}", "/rigs/bob", "/?q=script"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "<script>document" not in page.text and "<img src=x" not in page.text, path
            assert 'onerror="' not in page.text, path
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
            assert page.headers["x-content-type-options"] == "nosniff"
        board = client.get("/").text
        assert html.escape(XSS_SCRIPT, quote=True).replace("&#x27;", "&#39;") in board
        # the only scripts a page loads are our own, from /static
        assert re.findall(r"<script[^>]*>", board) == ['<script src="/static/app.js" defer>']
        api = client.get(f"/api/items/{o}")
        assert api.headers["content-type"] == "application/json"
        assert api.json()["item"]["title"] == XSS_ONERROR  # JSON carries the record as it is


def test_api_items_carry_the_same_records_as_browse_json(rigs: Rigs) -> None:
    post_items(rigs, "alice", ["one", "two"], priority=1)
    [c] = post_items(rigs, "bob", ["three"], type="rfc")
    op(rigs, "alice", "claim", c)
    rigs.wl("carol", "sync")
    code, cli = rigs.wl_json("carol", "browse", "--status", "all")
    assert code == 0
    with client_for(rigs.home("carol")) as (client, _):
        api = client.get("/api/items?per_page=200").json()
    assert api["items"] == cli["items"] and api["total"] == cli["total"] and api["corrupt"] == cli["corrupt"]
    code, show = rigs.wl_json("carol", "show", c)
    with client_for(rigs.home("carol")) as (client, _):
        one = client.get(f"/api/items/{c[:6]}").json()  # a unique prefix resolves, as on the CLI
    for key in ("item", "completion", "attestations"):
        assert one[key] == show[key]
    assert [e["op"] for e in one["history"]] == ["post", "claim"]


def test_live_poll_shows_another_rigs_claim(rigs: Rigs) -> None:
    [a] = post_items(rigs, "alice", ["to be taken"])
    with client_for(rigs.home("alice"), poll=0.2) as (client, hub):
        assert "claimed" not in re.search(rf'<tr id="row-{a}".*?</tr>', client.get("/").text, re.S).group(0)
        before = client.get("/api/status").json()
        op(rigs, "bob", "claim", a)  # another rig, another home, pushing to the commons

        def claimed() -> bool:
            return bool(client.get(f"/api/items/{a}").json()["item"]["claimed_by"] == "bob")

        wait_for(claimed, timeout=10)
        after = client.get("/api/status").json()
        assert after["head"] != before["head"] and after["synced_at"] and after["sync_error"] is None
        assert f'data-head="{after["head"]}"' in client.get("/").text
        assert hub.version > 1
        # a commit that records no operation (hand-made) is still picked up: the board is listed again
        from board.records import Item

        sneaked = Item(id="w-abcdef0123", title="hand-written", posted_by="bob", created_at=after["synced_at"],
                       updated_at=after["synced_at"])
        commit_file_to_remote(rigs.commons, "wanted/ab/w-abcdef0123.json", sneaked.encode())
        wait_for(lambda: "w-abcdef0123" in row_ids(client.get("/").text), timeout=10)


def test_unreachable_remote_is_reported_and_the_local_copy_still_served(rigs: Rigs, tmp_path: Path) -> None:
    [a] = post_items(rigs, "alice", ["still visible"])
    from board.home import Home

    Home(rigs.home("alice")).set_config("remote", str(tmp_path / "gone.git"))
    with client_for(rigs.home("alice"), poll=0.2) as (client, _):
        status = wait_for(lambda: client.get("/api/status").json() if client.get("/api/status").json()["sync_error"] else None)
        assert "gone.git" in status["sync_error"] or status["sync_error"]
        page = client.get("/")
        assert a in row_ids(page.text) and 'class="synced stale"' in page.text


def test_another_participants_corrupt_record_never_stops_the_pages(rigs: Rigs) -> None:
    [a] = post_items(rigs, "alice", ["fine item"])
    commit_file_to_remote(rigs.commons, "wanted/ee/w-ee00000000.json", b"{not json")
    commit_file_to_remote(rigs.commons, "rigs/mallory.json", b"[]")
    odd = {"handle": "trudy", "address": "0xnot-an-address", "registered_at": "2026-01-01T00:00:00Z",
           "display_name": XSS_SCRIPT, "previous_addresses": 7, "canary": {"stable": "yes", "diverging": 5}}
    commit_file_to_remote(rigs.commons, "rigs/trudy.json", orjson.dumps(odd))
    with client_for(rigs.home("alice")) as (client, _):
        page = wait_for(lambda: (p := client.get("/")).text.count("corrupt record") and p)
        assert page.status_code == 200 and a in row_ids(page.text)
        assert "wanted/ee/w-ee00000000.json" in page.text
        assert client.get("/api/items").json()["corrupt"]
        assert client.get("/rigs").status_code == 200 and client.get("/dashboard").status_code == 200
        trudy = client.get("/rigs/trudy")
        assert trudy.status_code == 200 and "<script>document" not in trudy.text
        assert client.get("/api/rigs/trudy").json()["stats"]["canary_status"] == "diverging"


def test_unknown_and_malformed_ids_are_404_pages_not_tracebacks(rigs: Rigs) -> None:
    post_items(rigs, "alice", ["x"])
    with client_for(rigs.home("alice")) as (client, _):
        for path in ("/items/w-0000000000", "/items/..%2f..%2fetc", "/items/w-$(id)", "/rigs/Nobody", "/rigs/zed"):
            page = client.get(path)
            assert page.status_code == 404, path
            assert "Traceback" not in page.text and "<h1>404</h1>" in page.text
        api = client.get("/api/items/w-0000000000")
        assert api.status_code == 404 and "no wanted item matching" in api.json()["error"]


def test_read_only_by_default_and_csrf_on_every_post(rigs: Rigs) -> None:
    with client_for(rigs.home("alice")) as (client, _):
        assert client.get("/post").status_code == 403
        assert client.post("/post", data={"prompt": "x", "model": "m"}).status_code == 403
    job = {"prompt": "what is 1+1", "model": "gemma3:270m", "backend": "llama-cpp", "seed": "7", "max_tokens": "8"}
    with client_for(rigs.home("alice"), allow_post=True) as (client, hub):
        form = client.get("/post")
        assert form.status_code == 200 and "wl_csrf" in form.cookies
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert token == hub.csrf
        assert "samesite=strict" in form.headers["set-cookie"].lower()
        assert client.post("/post", data=job).status_code == 403  # no token
        assert client.post("/post", data={**job, "csrf": "forged"}).status_code == 403
        evil = client.post("/post", data={**job, "csrf": token}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        client.cookies.clear()
        assert client.post("/post", data={**job, "csrf": token}).status_code == 403  # token without the cookie
        client.get("/post")
        assert not client.get("/api/items").json()["items"]
        done = client.post("/post", data={**job, "csrf": token}, follow_redirects=False)
        assert done.status_code == 303
        item_id = done.headers["location"].split("/")[2].split("?")[0]
        refused = client.post(f"/items/{item_id}/verify", data={"mode": "rerun"})
        assert refused.status_code == 403 and "CSRF" in refused.text  # refused before any engine runs
    item = rigs.item("bob", item_id)  # on the commons, as bob's fresh fetch sees it
    posted = orjson.loads(item.description)
    assert (item.type, item.posted_by, posted["seed"], posted["max_tokens"]) == ("inference", "alice", 7, 8)
    assert posted["model_digest"].startswith("sha256:a5fd3b62")  # pinned as `wl infer post` pins it


def test_allow_post_needs_a_loopback_host(rigs: Rigs) -> None:
    res = rigs.wl("alice", "serve", "--host", "0.0.0.0", "--allow-post")
    assert res.exit_code == 2 and "loopback" in res.output


def test_wl_help_does_not_import_the_web_stack() -> None:
    code = (
        "import sys\nfrom board.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('starlette', 'uvicorn', 'jinja2', 'wl_infer.web.app') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "serve" in out.stdout and "LOADED []" in out.stdout, out.stdout + out.stderr


def test_dashboard_charts_count_jobs_from_the_history_and_escape_model_names(rigs: Rigs) -> None:
    hostile = '<svg onload="alert(3)">'
    jobs = [orjson.dumps({"prompt": f"p{i}", "model": m, "seed": 1, "backend": "ollama"}).decode()
            for i, m in enumerate(("gemma3:270m", "gemma3:270m", hostile))]
    ids = []
    for i, job in enumerate(jobs):
        ids += post_items(rigs, "bob", [f"infer: p{i}"], type="inference", description=job)
    post_items(rigs, "bob", ["not a job"])
    with client_for(rigs.home("alice")) as (client, _):
        data = client.get("/api/dashboard").json()
        assert sum(data["hourly"]["series"]["posted"]) == 3  # the plain item is not an inference job
        assert {m["model"]: m["jobs"] for m in data["models"]} == {"gemma3:270m": 2, hostile: 1}
        page = client.get("/dashboard").text
        assert page.count("<svg") == 1 and page.count("<rect") == 1  # one hour's bar; no verdicts or tokens yet
        assert "<svg onload" not in page and "&lt;svg onload" in page
        board = client.get("/?model=" + hostile).text
        assert row_ids(board) == [ids[2]] and "<svg onload" not in board


def test_tokens_per_second_estimate_runs_from_the_last_claim_to_the_result() -> None:
    from wl_infer.web.data import Event
    from wl_infer.web.detail import claim_to_result_rate

    def ev(op: str, at: str) -> Event:
        return Event("0" * 40, op, "bob", at, "w-0123456789", {})

    history = [ev("post", "2026-01-01T00:00:00Z"), ev("claim", "2026-01-01T00:00:10Z"), ev("unclaim", "2026-01-01T00:01:00Z"),
               ev("claim", "2026-01-01T00:02:00Z"), ev("done", "2026-01-01T00:02:04Z")]
    assert claim_to_result_rate(history, 100) == 25.0  # 100 tokens in the 4 s of the second claim
    assert claim_to_result_rate(history[:4], 100) is None  # no result yet
    assert claim_to_result_rate([ev("claim", "garbage"), ev("done", "2026-01-01T00:02:04Z")], 100) is None
