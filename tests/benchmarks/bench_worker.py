"""`wl infer worker` throughput: one warm worker vs a process per job, 1/2/4 workers, and claim contention.

    .venv/bin/python tests/benchmarks/bench_worker.py [--engine llama|fake] [--remote daemon|path]
                                                      [--jobs 20] [--max-tokens 16] [--contention-jobs 40]

Everything is real except, with `--engine fake`, the model server: jobs then run on the ollama backend against
the Ollama-speaking HTTP server of tests/fake_servers.py (no Ollama can be installed here), which isolates the
board's own cost. The default engine is llama.cpp in-process on the embedded gemma3:270m. The commons is a
bare repository served by `git daemon` on 127.0.0.1 (`--remote path` uses the bare path directly).

1. jobs/min for N jobs: one `wl infer worker --max-jobs N` process (model loaded once) against N sequential
   `wl infer run <id>` processes (each starts Python, imports, loads the model);
2. 1, 2 and 4 worker processes (separate homes) draining N jobs: jobs/min, time from start to last done;
3. claim contention with 4 workers on the fake engine (board cost dominates, so races are most frequent):
   compare-and-swap retries per claim and lost races per claim, from the workers' JSON events.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from fake_servers import FakeOllama  # noqa: E402
from remotes import WL, join_rig, make_commons, running_git_daemon  # noqa: E402

from board.home import Home  # noqa: E402
from board.service import Board  # noqa: E402
from wl_infer.codec import Job  # noqa: E402
from wl_infer.jobs import post_job  # noqa: E402

FAKE_MODEL = "llama3.2:1b"


@contextlib.contextmanager
def commons(root: Path, remote: str) -> Iterator[str]:
    if remote == "path":
        yield str(make_commons(root))
        return
    with running_git_daemon(root / "srv") as daemon:
        make_commons(root / "srv")
        yield daemon.url("commons.git")


def post(home: Path, n: int, engine: str, max_tokens: int, tag: str) -> list[str]:
    with Board(Home(home)) as b:
        out = []
        for i in range(n):
            prompt = f"Question ({tag}): what is {i} + {i}?\nAnswer:"
            if engine == "llama":
                job = Job(prompt=prompt, model="gemma3:270m", backend="llama-cpp", max_tokens=max_tokens,
                          model_digest="sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
            else:
                job = Job(prompt=prompt, model=FAKE_MODEL, max_tokens=max_tokens)
            out.append(post_job(b, job).item_id)
        return out


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_workers(homes: list[Path], env: dict[str, str], extra: list[str], timeout: float = 900) -> dict[str, Any]:
    """Start one worker per home, wait for all; jobs/min from start to the last `done` event."""
    start = time.time()
    procs = [
        subprocess.Popen([WL, "--home", str(h), "--json", "infer", "worker", "--poll", "0.2", "--idle-exit", "1.5",
                          *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for h in homes
    ]  # fmt: skip
    events: list[dict[str, Any]] = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            events += [orjson.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    done = [e for e in events if e["event"] == "done"]
    last = max((_at(e["at"]) for e in done), default=time.time())
    claimed = [e for e in events if e["event"] == "claimed"]
    lost = [e for e in events if e["event"] == "lost_race"]
    return {
        "done": len(done),
        "wall_s": last - start,
        "claims": len(claimed),
        "lost": len(lost),
        "retries": sum(e["retries"] for e in claimed + lost),
        "failed": [e for e in events if e["event"] in ("failed", "result_kept")],
    }


def report(rows: list[tuple[str, str, str, str]], name: str, r: dict[str, Any], n: int, note: str = "") -> None:
    """Add a row (and print it at once: the whole run takes minutes); failures are shown, never hidden."""
    if r["failed"] or r["done"] != n:
        note += f" | {r['done']}/{n} done, failed: " + "; ".join(f"{e['id']}: {e.get('error')}" for e in r["failed"])
    rows.append((name, f"{r['wall_s']:.1f}", f"{per_min(r['done'], r['wall_s']):.1f}", note.strip()))
    print(f"{name:<36} {rows[-1][1]:>8} {rows[-1][2]:>9}  {rows[-1][3]}", flush=True)


def sequential_runs(home: Path, ids: list[str], env: dict[str, str], extra: list[str]) -> float:
    start = time.time()
    for iid in ids:
        subprocess.run([WL, "--home", str(home), "--json", "infer", "run", iid, *extra], env=env,
                       capture_output=True, check=True, timeout=300)  # fmt: skip
    return time.time() - start


def per_min(n: int, seconds: float) -> float:
    return 60.0 * n / seconds if seconds > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["llama", "fake"], default="llama")
    ap.add_argument("--remote", choices=["daemon", "path"], default="daemon")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--contention-jobs", type=int, default=40)
    ap.add_argument("--skip-scaling", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("WL_MODEL_CACHE", str(Path.home() / ".cache" / "wl-infer-test-models"))
    engine_args = ["--threads", str(min(4, os.cpu_count() or 1))] if args.engine == "llama" else []
    rows: list[tuple[str, str, str, str]] = []
    root = Path(tempfile.mkdtemp(prefix="wl-bench-worker-"))
    with FakeOllama(models={FAKE_MODEL: {}}) as fake, commons(root, args.remote) as url:
        env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"}
        env["OLLAMA_HOST"] = fake.url
        poster = join_rig(root, url, "poster")
        homes = [join_rig(root, url, f"w{i}").home for i in range(4)]
        n = args.jobs

        if args.engine == "llama":  # assemble the model and fill the page cache before timing anything
            [warm] = post(poster.home, 1, "llama", 1, "warm-up")
            sequential_runs(homes[0], [warm], env, engine_args)

        ids = post(poster.home, n, args.engine, args.max_tokens, "warm")
        warm = run_workers([homes[0]], env, ["--max-jobs", str(n), *engine_args])
        report(rows, f"1 warm worker, {n} jobs", warm, n)
        ids = post(poster.home, n, args.engine, args.max_tokens, "cold")
        cold_s = sequential_runs(homes[0], ids, env, engine_args)
        w_rate, c_rate = per_min(n, warm["wall_s"]), per_min(n, cold_s)
        rows.append((f"{n} x `wl infer run` processes", f"{cold_s:.1f}", f"{c_rate:.1f}", ""))
        rows.append(("  ratio warm / processes", "", f"{w_rate / c_rate:.2f}x", ""))
        print(f"processes: {cold_s:.1f} s, {c_rate:.1f} jobs/min; ratio {w_rate / c_rate:.2f}x", flush=True)

        if not args.skip_scaling:
            for k in (1, 2, 4):
                post(poster.home, n, args.engine, args.max_tokens, f"scale{k}")
                r = run_workers(homes[:k], env, engine_args)
                report(rows, f"{k} worker(s), {n} jobs", r, n, f"lost {r['lost']}, retries {r['retries']}")
            if args.engine == "llama":  # the same with one engine thread per worker: cores shared, not fought over
                for k in (1, 2, 4):
                    split = ["--threads", "1"]
                    post(poster.home, n, args.engine, args.max_tokens, f"split{k}")
                    r = run_workers(homes[:k], env, split)
                    report(rows, f"{k} workers x {split[1]} thread(s), {n} jobs", r, n,
                           f"lost {r['lost']}, retries {r['retries']}")

        m = args.contention_jobs
        post(poster.home, m, "fake", args.max_tokens, "race")
        r = run_workers(homes, env, [])
        per_claim = r["retries"] / max(1, r["claims"])
        report(rows, f"4 workers racing, {m} fake jobs", r, m,
               f"{r['claims']} claims, {r['lost']} lost races, {r['retries']} CAS retries "
               f"= {per_claim:.2f} retries/claim, {r['lost'] / max(1, r['claims']):.2f} lost/claim")

    print(f"\nengine: {args.engine} ({'gemma3:270m via llama-cpp, ' + ' '.join(engine_args) if args.engine == 'llama' else 'FakeOllama on 127.0.0.1'}), "
          f"max_tokens {args.max_tokens}, remote: {args.remote}, cores: {os.cpu_count()}")  # fmt: skip
    print(f"{'measurement':<36} {'wall s':>8} {'jobs/min':>9}  notes")
    for name, wall, rate, note in rows:
        print(f"{name:<36} {wall:>8} {rate:>9}  {note}")


if __name__ == "__main__":
    main()
