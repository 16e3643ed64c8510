"""Prefill verification vs regeneration on the embedded model: median times and their ratio.

Run: python tests/benchmarks/bench_prefill.py [--lengths 128 256] [--repeats 5] [--threads N]
The model loads once before timing; each length uses a prompt whose greedy output runs to max_tokens.
Reruns and prefills alternate so that other load on the machine hits both alike; medians are reported,
and the ratio of the fastest runs as well.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from wl_infer.backends import BackendConfig
from wl_infer.backends.llama_cpp import LlamaCppBackend, default_threads
from wl_infer.codec import Job

PROMPT = "Write a short story about a robot who learns to paint."


def bench(backend: LlamaCppBackend, n_tokens: int, repeats: int, prompt: str) -> dict[str, float]:
    """Median wall time of generate() and of score() on its tokens, both with the engine warm."""
    job = Job(prompt=prompt, model="gemma3:270m", max_tokens=n_tokens, backend="llama-cpp")
    gen = backend.generate(job)  # warm-up: loads the engine, pages the weights in
    if len(gen.tokens or []) != n_tokens:
        raise SystemExit(f"prompt stopped after {len(gen.tokens or [])} tokens; pick another prompt")
    rerun, prefill = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        again = backend.generate(job)
        rerun.append(time.perf_counter() - t)
        assert again.tokens == gen.tokens
        t = time.perf_counter()
        result = backend.score(job, gen.tokens or [], gen.output)
        prefill.append(time.perf_counter() - t)
        assert result.ok, result.reason
    r, p = statistics.median(rerun), statistics.median(prefill)
    return {
        "tokens": n_tokens,
        "rerun_s": r,
        "prefill_s": p,
        "ratio": r / p,
        "best_ratio": min(rerun) / min(prefill),  # least disturbed runs: robust when the machine is shared
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--home", type=Path, default=None, help="wl home (default: a temporary one)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="wl-bench-"))
    os.environ.setdefault("WL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "wl-model-cache"))
    backend = LlamaCppBackend(BackendConfig(home=home, threads=args.threads))
    print(f"cpu threads={default_threads(args.threads)} cache={os.environ['WL_MODEL_CACHE']}")
    print(f"{'tokens':>6}  {'rerun (s)':>9}  {'prefill (s)':>11}  {'ratio':>5}  {'best-run ratio':>14}")
    for n in args.lengths:
        row = bench(backend, n, args.repeats, args.prompt)
        print(
            f"{n:>6}  {row['rerun_s']:>9.3f}  {row['prefill_s']:>11.3f}  {row['ratio']:>5.2f}  {row['best_ratio']:>14.2f}"
        )
    backend.close()


if __name__ == "__main__":
    main()
