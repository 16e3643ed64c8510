"""Verification by rerun vs by prefill, end to end through verify_item: median times and their ratio.

Run: .venv/bin/python tests/benchmarks/bench_verify.py [--lengths 128 256] [--repeats 5] [--threads N]
     .venv/bin/python tests/benchmarks/bench_verify.py --backend vllm --model Qwen/Qwen2.5-0.5B-Instruct  (GPU)

A local board gets one signed completion per length (run_item); each is then verified with record=False, so the
timing covers decoding and checking the evidence, the signature check, the envelope and the engine work, but
no git commit. One BackendPool serves the run and every verification: model load is excluded (warm-up first).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from board.home import Home  # noqa: E402
from board.service import Board, init_local  # noqa: E402
from wl_infer.backends import BackendConfig  # noqa: E402
from wl_infer.codec import Job  # noqa: E402
from wl_infer.jobs import BackendPool, post_job, run_item  # noqa: E402
from wl_infer.verify import VERIFIED, verify_item  # noqa: E402

# A base-model prompt whose greedy continuation does not stop early, so the output runs to max_tokens.
PROMPT = "Write a short story about a robot who learns to paint."


def completion(board: Board, pool: BackendPool, backend: str, model: str, prompt: str, n: int) -> tuple[str, int]:
    """Post and run one job of n tokens on this board; returns its id and how many tokens it produced."""
    posted = post_job(board, Job(prompt=prompt, model=model, max_tokens=n, backend=backend), push=False, pool=pool)
    run = run_item(board, posted.item_id, pool, push=False)
    return run.item_id, len(run.evidence.tokens or [])


def timed_verify(board: Board, pool: BackendPool, item_id: str, mode: str) -> float:
    started = time.perf_counter()
    v = verify_item(board, item_id, pool, mode=mode, record=False, push=False)
    elapsed = time.perf_counter() - started
    if v.verdict != VERIFIED or v.mode != mode:
        raise SystemExit(f"{mode} verification of {item_id} gave {v.verdict} ({v.mode}): {v.reason}")
    return elapsed


def bench(board: Board, pool: BackendPool, args: argparse.Namespace, n: int) -> dict[str, Any]:
    item_id, produced = completion(board, pool, args.backend, args.model, args.prompt, n)
    if produced != n:
        print(f"  note: the output stopped after {produced} of {n} tokens", file=sys.stderr)
    timed_verify(board, pool, item_id, "prefill")  # warm both paths once
    timed_verify(board, pool, item_id, "rerun")
    rerun, prefill = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        rerun.append(timed_verify(board, pool, item_id, "rerun"))
        prefill.append(timed_verify(board, pool, item_id, "prefill"))
    r, p = statistics.median(rerun), statistics.median(prefill)
    return {"tokens": produced, "rerun_s": r, "prefill_s": p, "ratio": r / p,
            "rerun_all": rerun, "prefill_all": prefill}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="llama-cpp", choices=["llama-cpp", "vllm"])
    parser.add_argument("--model", default="gemma3:270m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="llama-cpp threads (default: the backend's)")
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args()
    os.environ.setdefault("WL_MODEL_CACHE", str(Path.home() / ".cache" / "wl-infer-test-models"))
    root = Path(tempfile.mkdtemp(prefix="wl-bench-verify-"))
    board = init_local(Home(root / "home"), "bench")
    pool = BackendPool(BackendConfig(home=root / "home", threads=args.threads))
    try:
        env = pool.get(args.backend).envelope(Job(prompt="x", model=args.model, backend=args.backend))
        runtime = env.get("runtime", {})
        plat = env.get("platform")
        where = env.get("gpu") or (plat.get("cpu") if isinstance(plat, dict) else plat) or platform.processor()
        print(f"{args.backend} {args.model} on {where}; threads={runtime.get('n_threads', '-')} "
              f"cores={len(os.sched_getaffinity(0))} repeats={args.repeats} (median, model load excluded)")
        print(f"{'tokens':>6}  {'rerun (s)':>9}  {'prefill (s)':>11}  {'ratio':>6}")
        for n in args.lengths:
            row = bench(board, pool, args, n)
            print(f"{row['tokens']:>6}  {row['rerun_s']:>9.3f}  {row['prefill_s']:>11.3f}  {row['ratio']:>5.2f}×")
    finally:
        pool.close()
        board.close()


if __name__ == "__main__":
    main()
