"""Issue 15's worker table: N `wl infer worker` processes draining one commons — the harness for before/after.

    .venv/bin/python tests/benchmarks/bench_scale.py [--workers 1,2,4,8] [--jobs 80] [--runs 5]
                     [--remote daemon|http-backend] [--job-seconds 0] [--hook] [--json out.json]

Each run: a fresh bare commons served on 127.0.0.1 by `git daemon` (default) or git's own `git http-backend`,
a poster that posts `--jobs` jobs (locally, then one push), N worker homes (`wl --home H --json infer worker
--idle-exit 1.5`, one process each) on the ollama backend against tests/fake_servers.py's FakeOllama (no
model cost: the board's own cost is what is measured; `--job-seconds S` makes each generation take S s).
A row is the median of `--runs` runs. What each column is, and where it is counted:

- jobs/min: jobs done from the workers' start (process spawn) to the last `done` event.
- refused pushes per job: receive-pack requests less the pushes the server accepted (the post-receive hook
  runs once per accepted push): CAS or lane races lost or given up after the advertisement, each a round trip.
- pushes per landed commit: receive-pack requests counted by the SERVER (git daemon's --verbose log, or the
  POSTs to git-receive-pack) / landed commits. Landed commits: distinct commits that accepted ref updates made
  reachable, from a post-receive hook logging every `<old> <new> <ref>` update — main and any other ref
  (claim lanes `refs/wl/claims/<id>`), so commits on lanes deleted after folding still count. A push that
  creates k lane refs, or a main commit carrying k results, shows up as < 1 push per job commit.
- lost races per claim: `lost_race` events (or the `stopped` summaries' lost_races, whichever is larger) /
  successful claims (`claimed` events, or the summaries' claims).
- gave up: submissions that gave up after the CAS attempts (`result_kept` events; kept and resubmitted later:
  `resubmitted` events are counted too).
- worker CPU/job: user + system time of the worker processes (getrusage of the waited children) / jobs done;
  CPU busy: the whole machine's busy time from /proc/stat over the workers' run (clients, the git server, and
  anything else running) / (wall time × cores) — near 100 % says the CPU, not the commons, is the limit;
  first claim: seconds from the spawn to the first `claimed` event (start-up: imports, the first fetch and
  validation), which 80 short jobs pay once per worker.
- exactly once: read from the commons after the run: every posted item is in_review or completed, has a
  completion record, and main's history (every commit reachable from main) holds exactly one `done` for it —
  a `batch` operation's `args["ops"]` done entries count too.
Unknown event names are tallied and printed, so a new worker keeps working with this parser.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from counting_servers import (  # noqa: E402
    accepted_pushes,
    accepted_updates,
    install_update_log,
    landed_commits,
    serving,
)
from fake_servers import FakeOllama  # noqa: E402
from remotes import WL, join_rig, make_commons  # noqa: E402

from board.home import Home  # noqa: E402
from board.ops import op_from_message  # noqa: E402
from board.service import Board  # noqa: E402
from board.store import MAIN, Store  # noqa: E402
from board.view import TreeView  # noqa: E402
from wl_infer.codec import Job  # noqa: E402
from wl_infer.jobs import post_job  # noqa: E402

FAKE_MODEL = "llama3.2:1b"
KNOWN_EVENTS = {"started", "claimed", "lost_race", "done", "result_kept", "resubmitted", "resubmit_failed",
                "resubmit_later", "idle", "idle_exit", "no_job", "stopped", "stopping", "synced", "skipped",
                "failed", "offline", "online", "unpublished", "sync_failed", "abandoned", "generating",
                "generated", "dispatched", "renew_failed", "renew_stopped", "unsubmittable"}  # fmt: skip


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def post_jobs(home: Path, n: int, tag: str) -> list[str]:
    """n fake-engine jobs, committed locally and published in one sync (posting is not what is measured)."""
    with Board(Home(home)) as b:
        ids = [post_job(b, Job(prompt=f"Question ({tag}): what is {i} + {i}?\nAnswer:", model=FAKE_MODEL,
                                max_tokens=16), push=False).item_id for i in range(n)]  # fmt: skip
        b.sync()
        if b.pending():
            raise SystemExit("posting: the jobs did not reach the commons")
    return ids


def machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


def run_workers(
    homes: list[Path], env: dict[str, str], timeout: float, extra: list[str]
) -> tuple[float, list[dict[str, Any]]]:
    """One worker process per home, all started at once; (start time, every JSON event they printed)."""
    worker = ["--json", "infer", "worker", "--poll", "0.2", "--idle-exit", "1.5", *extra]
    start = time.time()
    procs = [
        subprocess.Popen([WL, "--home", str(h), *worker], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
        for h in homes
    ]  # fmt: skip
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            for line in out.splitlines():
                if line.startswith("{"):
                    try:
                        ev = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(ev, dict) and isinstance(ev.get("event"), str):
                        events.append(ev)
    except subprocess.TimeoutExpired:
        print(
            f"  workers still running after {timeout:.0f} s: stopped (this run's figures are partial)",
            flush=True,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return start, events


def event_figures(start: float, events: list[dict[str, Any]]) -> dict[str, Any]:
    names = Counter(e["event"] for e in events)
    done = [e for e in events if e["event"] == "done"]
    last = max((_at(e["at"]) for e in done if isinstance(e.get("at"), str)), default=time.time())
    summaries = [e for e in events if e["event"] == "stopped"]
    claims = max(names["claimed"], sum(int(s.get("claims") or 0) for s in summaries))
    lost = max(names["lost_race"], sum(int(s.get("lost_races") or 0) for s in summaries))
    retries = sum(int(e.get("retries") or 0) for e in events if e["event"] in ("claimed", "lost_race"))
    retries = max(retries, sum(int(s.get("claim_retries") or 0) for s in summaries))
    claimed = [_at(e["at"]) for e in events if e["event"] == "claimed" and isinstance(e.get("at"), str)]
    return {
        "first_claim_s": min(claimed) - start if claimed else None,
        "done_events": len(done), "wall_s": last - start, "claims": claims, "lost": lost,
        "claim_retries": retries, "gave_up": names["result_kept"], "resubmitted": names["resubmitted"],
        "failed": names["failed"],
        "unknown_events": {k: v for k, v in names.items() if k not in KNOWN_EVENTS},
    }  # fmt: skip


def done_counts(repo: Path) -> Counter[str]:
    """item id -> `done` operations in every commit reachable from main (a fold's carried dones too)."""
    from dulwich.repo import Repo

    from board.folds import carried

    counts: Counter[str] = Counter()
    r = Repo(str(repo))
    try:
        head = r.refs[MAIN]
        for entry in r.get_walker(include=[head]):
            op = op_from_message(entry.commit.message.decode(errors="replace"))
            if op is None:
                continue
            if op.op == "done" and op.id:
                counts[op.id] += 1
            elif op.op == "fold":  # results folded from their lanes (board/folds.py)
                counts.update(d.id for d in carried(op) if d.id)
            elif op.op == "batch" and isinstance(op.args.get("ops"), list):
                for sub in op.args["ops"]:
                    if isinstance(sub, dict) and sub.get("op") == "done":
                        iid = sub.get("id") or sub.get("item_id") or sub.get("item")
                        if isinstance(iid, str):
                            counts[iid] += 1
    finally:
        r.close()
    return counts


def check_once(repo: Path, ids: list[str]) -> list[str]:
    """Problems with 'every item completed exactly once' (empty when it holds), read from the commons."""
    dones = done_counts(repo)
    problems = []
    store = Store(repo)
    try:
        head = store.ref(MAIN)
        assert head is not None
        view = TreeView(store, store.tree_id(head))
        for iid in ids:
            item = view.item(iid)
            status = item.status if item is not None else "missing"
            if status not in ("in_review", "completed") or view.completion(iid) is None or dones[iid] != 1:
                problems.append(f"{iid}: {status}, {dones[iid]} done op(s)")
    finally:
        store.close()
    return problems


def one_run(root: Path, k: int, args: argparse.Namespace, fake_url: str) -> dict[str, Any]:
    srv = root / "srv"
    with serving(args.remote, srv) as server:
        repo = make_commons(srv)
        if args.hook:
            subprocess.run([WL, "hook", "install", str(repo)], check=True, capture_output=True, timeout=120)
        install_update_log(repo)
        url = server.url("commons.git")
        poster = join_rig(root, url, "poster")
        homes = [join_rig(root, url, f"w{i}").home for i in range(k)]
        ids = post_jobs(poster.home, args.jobs, root.name)
        before_counts, before_updates, before_pushes = (
            server.counts(),
            len(accepted_updates(repo)),
            accepted_pushes(repo),
        )
        r = Store(repo)
        before_head = r.ref(MAIN)
        r.close()
        assert before_head is not None
        env = {key: v for key, v in os.environ.items() if key != "WL_DEBUG"}
        env["OLLAMA_HOST"] = fake_url
        extra = ["--batch", str(args.batch)] if args.batch else []
        cpu0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy(), time.monotonic()
        start, events = run_workers(homes, env, args.timeout, extra)
        cpu1, busy1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy(), time.monotonic()
        counts = server.counts() - before_counts
        updates = accepted_updates(repo)[before_updates:]
        fig = event_figures(start, events)
        fig["landed"] = landed_commits(repo, updates, [before_head])
        fig["updates"] = len(updates)
        fig["lane_updates"] = sum(1 for _, _, ref in updates if ref.startswith("refs/wl/"))
        fig["pushes"] = counts["receive-pack"]
        fig["refused"] = counts["receive-pack"] - (accepted_pushes(repo) - before_pushes)
        fig["fetches"] = counts["upload-pack"]
        fig["problems"] = check_once(repo, ids)
        fig["completed"] = args.jobs - len(fig["problems"])
        fig["worker_cpu_s"] = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        fig["busy"] = (busy1 - busy0) / ((t1 - t0) * (os.cpu_count() or 1)) if busy0 is not None and busy1 else None
        fig["jobs_per_min"] = 60.0 * fig["completed"] / fig["wall_s"] if fig["wall_s"] > 0 else float("nan")
    return fig


def run_line(fig: dict[str, Any], jobs: int) -> str:
    line = (f"{fig['jobs_per_min']:.0f} jobs/min, {fig['pushes']} pushes / {fig['landed']} landed, "
            f"{fig['lost']} lost / {fig['claims']} claims ({fig['claim_retries']} CAS retries), "
            f"gave up {fig['gave_up']}, {fig['completed']}/{jobs} exactly once, "
            f"worker CPU {fig['worker_cpu_s']:.1f} s, busy {fig['busy'] or 0:.0%}")  # fmt: skip
    if fig["unknown_events"]:
        line += f", unknown events {fig['unknown_events']}"
    return line + (f"; PROBLEMS: {fig['problems'][:3]}" if fig["problems"] else "")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarise(k: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median
    return {
        "workers": k,
        "runs": len(runs),
        "jobs_per_min": med(r["jobs_per_min"] for r in runs),
        "pushes_per_landed": med(ratio(r["pushes"], r["landed"]) for r in runs),
        "lost_per_claim": med(ratio(r["lost"], r["claims"]) for r in runs),
        "retries_per_claim": med(ratio(r["claim_retries"], r["claims"]) for r in runs),
        "gave_up": med(r["gave_up"] for r in runs),
        "gave_up_total": sum(r["gave_up"] for r in runs),
        "exactly_once_runs": sum(1 for r in runs if not r["problems"]),
        "pushes_per_job": med(ratio(r["pushes"], r["completed"]) for r in runs),
        "refused_per_job": med(ratio(r["refused"], r["completed"]) for r in runs),
        "landed_per_job": med(ratio(r["landed"], r["completed"]) for r in runs),
        "fetches_per_job": med(ratio(r["fetches"], r["completed"]) for r in runs),
        "lane_updates": med(r["lane_updates"] for r in runs),
        "worker_cpu_ms_per_job": med(1000 * ratio(r["worker_cpu_s"], r["completed"]) for r in runs),
        "busy": med(r["busy"] for r in runs) if all(r["busy"] is not None for r in runs) else None,
        "first_claim_s": med(r["first_claim_s"] for r in runs) if all(r["first_claim_s"] is not None for r in runs)
        else None,
        "raw": runs,
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| workers | jobs/min | pushes per landed commit | lost races per claim | gave up (median; total) "
           "| exactly once | pushes/job | refused pushes/job | landed/job | fetches/job | worker CPU/job "
           "| CPU busy | first claim |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in rows:
        out.append(f"| {s['workers']} | {s['jobs_per_min']:.0f} | {s['pushes_per_landed']:.2f} "
                   f"| {s['lost_per_claim']:.2f} | {s['gave_up']:g}; {s['gave_up_total']} "
                   f"| {s['exactly_once_runs']}/{s['runs']} runs | {s['pushes_per_job']:.2f} "
                   f"| {s['refused_per_job']:.2f} "
                   f"| {s['landed_per_job']:.2f} | {s['fetches_per_job']:.1f} "
                   f"| {s['worker_cpu_ms_per_job']:.0f} ms "
                   f"| {'–' if s['busy'] is None else format(s['busy'], '.0%')} "
                   f"| {'–' if s['first_claim_s'] is None else format(s['first_claim_s'], '.1f') + ' s'} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts (default 1,2,4,8)")
    ap.add_argument("--jobs", type=int, default=80)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--remote", choices=["daemon", "http-backend"], default="daemon")
    ap.add_argument("--job-seconds", type=float, default=0.0, help="each generation takes this long (max 30)")
    ap.add_argument(
        "--hook", action="store_true", help="install `wl hook install`'s validating pre-receive hook"
    )
    ap.add_argument(
        "--batch", type=int, help="pass `--batch N` to the workers (claim lanes: N claims per push)"
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="per run: workers still running are stopped")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument(
        "--keep", action="store_true", help="keep the commons, homes and server logs (printed path)"
    )
    args = ap.parse_args()
    ks = [int(x) for x in args.workers.split(",") if x.strip()]
    if not ks or min(ks) < 1 or args.jobs < 1 or args.runs < 1 or not 0 <= args.job_seconds <= 30:
        ap.error("workers, jobs and runs must be positive; --job-seconds between 0 and 30")
    rows = []
    base = Path(tempfile.mkdtemp(prefix="wl-bench-scale-"))
    print(f"remote {args.remote}, {args.jobs} jobs, job {args.job_seconds:g} s, {args.runs} run(s) per row, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    with FakeOllama(models={FAKE_MODEL: {}}) as fake, contextlib.ExitStack() as cleanup:
        if not args.keep:
            cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        fake.state.work_s = args.job_seconds
        for k in ks:
            runs = []
            for i in range(args.runs):
                root = base / f"w{k}-r{i}"
                root.mkdir()
                fig = one_run(root, k, args, fake.url)
                runs.append(fig)
                print(f"  {k} worker(s) run {i + 1}: {run_line(fig, args.jobs)}", flush=True)
            rows.append(summarise(k, runs))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}" + (f"; kept {base}" if args.keep else ""))
    print(table(rows))
    if args.json:
        args.json.write_bytes(orjson.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                           option=orjson.OPT_INDENT_2))  # fmt: skip
    if any(s["exactly_once_runs"] != s["runs"] for s in rows):
        raise SystemExit("wl-bench: some item was not completed exactly once (see PROBLEMS above)")


if __name__ == "__main__":
    main()
