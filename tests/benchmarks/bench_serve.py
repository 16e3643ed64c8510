"""`wl serve` figures on a 10,000-item board.

Run: .venv/bin/python tests/benchmarks/bench_serve.py [--items N] [--runs R] [--trials T] [--poll S]

Measures (median and worst of R requests, in-process through the ASGI app, so it is the server's own time:
routing, filtering, rendering): the board page (first page, a deep page, a filtered search, /api/items) and an
item page (first view of a head, which checks the evidence signature, then cached). Then, with `wl serve` as a
real process at the default poll, the time from another rig's push to the update appearing on an open page:
in headless chromium when it is installed (the row's claimer cell changes without a reload), and on a raw
Server-Sent Events connection (the event naming the new head). The board is written straight into one commit
(posting 10,000 times would measure nothing useful): a mix of open items, inference jobs, signed results and
signed attestations. Everything runs in a temporary folder and every server binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the helpers

from web_helpers import running_serve  # noqa: E402

from board import layout  # noqa: E402
from board.home import Home  # noqa: E402
from board.ids import fmt_time, new_completion_id, new_item_id, utcnow  # noqa: E402
from board.keys import load_private_key  # noqa: E402
from board.records import Completion, Item  # noqa: E402
from board.service import Board, create_commons, join  # noqa: E402
from board.store import MAIN, NewObjects, Store  # noqa: E402
from wl_infer.codec import Evidence, Job, output_hash  # noqa: E402
from wl_infer.signing import sign_record  # noqa: E402
from wl_infer.web.app import create_app  # noqa: E402
from wl_infer.web.data import BoardSource  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def fill(commons: Path, homes: dict[str, Home], n: int, attested: int) -> tuple[list[str], str]:
    """n items in one commit: 60% plain, 40% inference (half of those with a signed result, `attested` of
    those with a signed VERIFIED attestation). Returns the ids and one attested id."""
    store = Store(commons)
    try:
        board_id = Board(homes["poster"]).meta()["board_id"]
        wkey, vkey = load_private_key(homes["worker"].path), load_private_key(homes["verifier"].path)
        now = fmt_time(utcnow())
        changes: dict[str, bytes | None] = {}
        ids, sample = [], ""
        for i in range(n):
            title = f"bench item {i}"
            item_id = new_item_id(title, utcnow())
            ids.append(item_id)
            item = Item(id=item_id, title=title, description=f"item number {i}", posted_by="poster",
                        created_at=now, updated_at=now, priority=i % 5, tags=["bench"])
            if i % 5 >= 3:
                job = Job(prompt=f"prompt {i}", model=("gemma3:270m", "llama3.2:1b")[i % 2], seed=i,
                          backend="llama-cpp" if i % 2 == 0 else "ollama", max_tokens=16)
                item.type, item.title, item.description = "inference", f"infer: prompt {i}", job.encode()
                if i % 10 >= 8:
                    out = f"output {i}"
                    ev = Evidence(output=out, output_hash=output_hash(out), model=job.model, seed=job.seed,
                                  backend=job.backend, tokens=list(range(16)), worker="worker",
                                  envelope={"backend": job.backend, "tokens_per_s": 40.0 + i % 7})
                    ctx = {"board_id": board_id, "item_id": item_id}
                    ev.signature = sign_record("evidence", ev.unsigned_dict(), ctx, wkey)
                    comp = Completion(new_completion_id(), item_id, "worker", ev.encode(), now)
                    item.status, item.claimed_by, item.evidence_url = "in_review", "worker", comp.evidence
                    changes[layout.completion_path(item_id)] = comp.encode()
                    if attested > 0:
                        attested -= 1
                        att = {"verdict": "VERIFIED", "item_id": item_id, "board_id": board_id,
                               "completion_id": comp.id, "worker": "worker", "verifier": "verifier",
                               "mode": "rerun", "expected": ev.output_hash, "actual": ev.output_hash, "at": now}
                        att["signature"] = sign_record("attestation", att, ctx, vkey)
                        changes[layout.attestation_path(item_id, "verifier")] = orjson_dumps(att)
                        sample = item_id
            changes[layout.item_path(item_id)] = item.encode()
        head = store.ref(MAIN)
        commit = store.make_commit(head, changes, f"bench: {n} items\n", "poster", NewObjects())
        assert store.set_ref(MAIN, commit, head)
        store.objects.pack_loose_objects()
        return ids, sample
    finally:
        store.close()


def orjson_dumps(d: dict[str, Any]) -> bytes:
    from board.records import dumps

    return dumps(d)


def timed_get(client: TestClient, path: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        res = client.get(path)
        out.append(time.perf_counter() - t)
        assert res.status_code == 200, (path, res.status_code)
    return out


def row(name: str, times: list[float], goal: str = "") -> None:
    med, worst = statistics.median(times) * 1000, max(times) * 1000
    print(f"  {name:<58} median {med:8.1f} ms   worst {worst:8.1f} ms   {goal}", flush=True)


def browser_latency(url: str, rigs: dict[str, Home], targets: list[str], poll: float) -> list[float] | None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("  (no chromium/chromedriver here: browser latency skipped)")
        return None
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    out = []
    try:
        for item_id in targets:
            driver.get(f"{url}/?q={item_id}")
            WebDriverWait(driver, 30).until(lambda d, i=item_id: d.find_element(By.ID, f"row-{i}"))
            time.sleep(random.uniform(0, poll))  # push at a random point of the server's poll cycle
            with Board(rigs["claimer"]) as b:
                b.mutate(b.new_op("claim", item_id, lease_seconds=1800))
            t = time.perf_counter()
            WebDriverWait(driver, 60, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d, i=item_id: d.find_element(By.CSS_SELECTOR, f"#row-{i} td.claimer").text == "claimer")
            out.append(time.perf_counter() - t)
    finally:
        driver.quit()
    return out


def sse_latency(url: str, rigs: dict[str, Home], targets: list[str], poll: float) -> list[float]:
    import httpx
    import orjson

    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for item_id in targets:
            with client.stream("GET", "/events") as stream:
                lines = stream.iter_lines()
                first = None
                for line in lines:
                    if line.startswith("data: "):
                        first = orjson.loads(line[6:])["head"]
                        break
                time.sleep(random.uniform(0, poll))  # push at a random point of the server's poll cycle
                with Board(rigs["claimer"]) as b:
                    b.mutate(b.new_op("claim", item_id, lease_seconds=1800))
                t = time.perf_counter()
                for line in lines:
                    if line.startswith("data: ") and orjson.loads(line[6:])["head"] != first:
                        break
                out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--poll", type=float, default=5.0, help="wl serve's --poll (default: its default, 5 s)")
    args = ap.parse_args()
    print(f"bench_serve: {args.items} items, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        base = Path(tmp)
        commons = base / "commons.git"
        create_commons(commons, "bench")
        homes = {}
        for h in ("poster", "worker", "verifier", "claimer", "viewer"):
            homes[h] = Home(base / f"home-{h}")
            join(homes[h], str(commons), h)[0].close()
        t = time.perf_counter()
        ids, sample = fill(commons, homes, args.items, attested=min(500, args.items // 20))
        print(f"  (wrote the {args.items}-item board in {time.perf_counter() - t:.1f} s)", flush=True)

        source = BoardSource(homes["viewer"].path)
        app = create_app(source, poll=3600, hosts=["testserver"], start_polling=False)
        t = time.perf_counter()
        with TestClient(app) as client:
            print(f"  (first fetch and index of the board: {time.perf_counter() - t:.2f} s)", flush=True)
            total = client.get("/api/items").json()["total"]
            assert total == args.items, total
            row("board page /, 50 rows", timed_get(client, "/", args.runs), "(goal < 200 ms)")
            row("board page /?page=150", timed_get(client, "/?page=150", args.runs), "(goal < 200 ms)")
            row("board page /?type=inference&q=prompt+12&sort=newest",
                timed_get(client, "/?type=inference&q=prompt+12&sort=newest", args.runs), "(goal < 200 ms)")
            row("/api/items, 50 records", timed_get(client, "/api/items", args.runs))
            first = [timed_get(client, f"/items/{i}", 1)[0] for i in ids[8 :: 10][: args.runs]]
            row("item page, a signed result (first view of this head)", first, "(goal < 50 ms)")
            row("item page, same (cached for this head)", timed_get(client, f"/items/{sample}", args.runs),
                "(goal < 50 ms)")
            row("item page, an open item", timed_get(client, f"/items/{ids[0]}", args.runs), "(goal < 50 ms)")
            row("rigs leaderboard /rigs", timed_get(client, "/rigs", max(3, args.runs // 3)))
            row("dashboard /dashboard", timed_get(client, "/dashboard", max(3, args.runs // 3)))
            hub = app.state.hub
            for n in (1, 2, 3):
                with Board(homes["claimer"]) as b:
                    b.mutate(b.new_op("claim", ids[n], lease_seconds=1800))
                before = hub.current.state.full_at
                t = time.perf_counter()
                hub.sync_once()
                kind = "full listing" if hub.current.state.full_at != before else "only the claimed item re-read"
                print(f"  (fetch + re-index after one new commit, {kind}: {(time.perf_counter() - t) * 1000:.0f} ms)",
                      flush=True)
        source.close()

        targets = [item_id for n, item_id in enumerate(ids) if n >= 2 and n % 5 < 3][: 2 * args.trials]  # open ones
        with running_serve(homes["viewer"].path, poll=args.poll) as url:
            time.sleep(1.0)
            sse = sse_latency(url, homes, targets[: args.trials], args.poll)
            row(f"push → SSE event on an open stream (poll {args.poll:g} s)", sse,
                "(goal < 10 s)")
            web = browser_latency(url, homes, targets[args.trials :], args.poll)
            if web:
                row(f"push → row updated in open chromium page (poll {args.poll:g} s)", web, "(goal < 10 s)")


if __name__ == "__main__":
    main()
