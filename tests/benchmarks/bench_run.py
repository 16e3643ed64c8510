"""`wl infer run` end to end vs a bare llama-cpp-python script generating the same tokens (both load the model).

    python tests/benchmarks/bench_run.py [--max-tokens 64] [--repeats 5]

Each measurement is a fresh process, wall clock, interleaved (bare, wl, bare, wl, …) so load on the machine
hits both alike. `wl infer run` includes everything a user pays for: interpreter start, imports, board
reads, the claim commit, model load, generation, signing, and the done commit (local board, no network).
Also prints tokens/s of generation and the wall time of `wl demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROMPT = "Write a short story about a robot who learns to paint."


def wl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WL_HOME=str(home))
    return subprocess.run([str(BIN / "wl"), "--json", *args], env=env, capture_output=True, text=True, check=True)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("WL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "wl-model-cache"))
    root = Path(tempfile.mkdtemp(prefix="wl-bench-run-"))
    home = root / "home"
    env = dict(os.environ, WL_HOME=str(home))
    wl(home, "init", "--handle", "bench")
    ids = []
    for _ in range(args.repeats + 1):
        out = wl(home, "infer", "post", "--prompt", PROMPT, "--model", "gemma3:270m", "--backend", "llama-cpp",
                 "--max-tokens", str(args.max_tokens))
        ids.append(json.loads(out.stdout)["id"])
    threads = json.loads(wl(home, "infer", "run", ids.pop()).stdout)  # warm the page cache and the model file
    bare_cmd = [sys.executable, str(HERE / "bench_generate.py"), "--bare", "--json", "--prompt", PROMPT,
                "--max-tokens", str(args.max_tokens)]
    bare, runs, rates = [], [], []
    for iid in ids:
        t, _ = timed(bare_cmd, env)
        bare.append(t)
        t, out = timed([str(BIN / "wl"), "--json", "infer", "run", iid], env)
        runs.append(t)
        data = json.loads(out)
        if data["elapsed_s"]:
            rates.append(data["tokens"] / data["elapsed_s"])
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "wl"), "--json", "demo"], env=env, capture_output=True, check=True)
    demo = time.perf_counter() - t0
    b, r = statistics.median(bare), statistics.median(runs)
    print(f"max_tokens={args.max_tokens} repeats={len(ids)} tokens generated={threads['tokens']}")
    print(f"{'bare llama-cpp-python script (process)':<44} {b:7.3f} s")
    print(f"{'wl infer run (process, local board)':<44} {r:7.3f} s")
    print(f"{'ratio wl/bare (goal <= 1.15)':<44} {r / b:7.3f}")
    print(f"{'generation tokens/s (median)':<44} {statistics.median(rates):7.1f}")
    print(f"{'wl demo wall time':<44} {demo:7.2f} s")


if __name__ == "__main__":
    main()
