"""Engine threads under contention: tok/s of the embedded model for the default thread count, 1 and 2 threads,
alone and beside one busy neighbour process (issue 13).

  python tests/benchmarks/bench_threads.py [--max-tokens 48] [--repeats 3] [--threads 1 --threads 2 …]

llama.cpp's threads spin-wait on each other at every step, so a thread that loses its core to a neighbour
stalls the rest. The neighbour here is `python -c 'while True: pass'` (one busy core), killed at the end.
Each configuration is one warm engine in this process (the model loads once per thread count, untimed); the
figure is the median of `repeats` generations. The load average is printed before each row: the machine
may be shared, so read the figures with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROMPT = "Write a short story about a robot who learns to paint."


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def measure(backend: Any, job: Any, repeats: int) -> tuple[float, list[float]]:
    backend.generate(job)  # warm: load the engine for this thread count, untimed
    rates = []
    for _ in range(repeats):
        gen = backend.generate(job)
        rates.append(len(gen.tokens or []) / gen.elapsed_s)
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, action="append", help="thread counts (default: the default, 1, 2)")
    args = parser.parse_args()
    os.environ.setdefault("WL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "wl-model-cache"))

    from wl_infer.backends import BackendConfig
    from wl_infer.backends.llama_cpp import LlamaCppBackend, default_threads
    from wl_infer.codec import Job

    default = default_threads(None)
    counts = args.threads or sorted({default, 1, 2})
    job = Job(prompt=PROMPT, model="gemma3:270m", max_tokens=args.max_tokens, backend="llama-cpp")
    print(f"cores={_cores()} default threads={default} max_tokens={args.max_tokens} repeats={args.repeats}")
    print(f"{'threads':>7} {'neighbour':>9} {'tok/s':>7}  runs                  load (1/5 min)")
    home = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    neighbour: subprocess.Popen[bytes] | None = None
    try:
        for busy in (False, True):
            if busy:
                neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for n in counts:
                backend = LlamaCppBackend(BackendConfig(home=home, threads=n))
                try:
                    load = _load()
                    median, rates = measure(backend, job, args.repeats)
                finally:
                    backend.close()
                mark = " (default)" if n == default else ""
                runs = " ".join(f"{r:.1f}" for r in rates)
                print(f"{n:>7} {'busy' if busy else 'none':>9} {median:>7.1f}  {runs:<21} {load}{mark}", flush=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    main()
