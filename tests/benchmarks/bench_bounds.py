"""Issue 10's figure: time from `wl infer run` to the refusal of a job whose context cannot fit, and its memory.

    python tests/benchmarks/bench_bounds.py [--repeats 5]

Each measurement is a fresh `wl infer run` process (wall clock, interpreter start included) on a local board,
for a job asking `options.n_ctx` = 1<<20 on gemma3:270m (trained context 32,768): refused from the GGUF header
before the claim, with nothing allocated. Peak RSS (the child's VmHWM, polled every 5 ms) is shown beside that of `wl --help` and
of a run that really loads the model and generates 8 tokens, so "nothing allocated" can be read off.
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

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infer_helpers import wait_with_peak_rss  # noqa: E402


def wl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WL_HOME=str(home))
    return subprocess.run([str(BIN / "wl"), "--json", *args], env=env, capture_output=True, text=True, check=True)


def measured(home: Path, *args: str) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit code) of one `wl` process."""
    env = dict(os.environ, WL_HOME=str(home))
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "wl"), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code, peak_kib = wait_with_peak_rss(proc, poll_s=0.005)
    return time.perf_counter() - t0, peak_kib // 1024, code


def post(home: Path, options: dict[str, object], max_tokens: int = 0) -> str:
    job = {"prompt": "what is 1+1", "model": "gemma3:270m", "seed": 42, "backend": "llama-cpp", "options": options}
    if max_tokens:
        job["max_tokens"] = max_tokens
    out = wl(home, "post", "--title", "infer: bench", "--type", "inference", "--description", json.dumps(job))
    return str(json.loads(out.stdout)["id"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("WL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "wl-model-cache"))
    home = Path(tempfile.mkdtemp(prefix="wl-bench-bounds-")) / "home"
    wl(home, "init", "--handle", "bench")
    wl(home, "infer", "models")  # assemble the embedded model once, outside the measurement
    refusals, rss = [], []
    for _ in range(args.repeats):
        iid = post(home, {"n_ctx": 1 << 20})
        took, peak, code = measured(home, "infer", "run", iid, "--limit-ctx", "0")
        assert code == 1, "the job was not refused"
        refusals.append(took)
        rss.append(peak)
    help_s, help_rss, _ = measured(home, "--help")
    real = post(home, {}, max_tokens=8)
    run_s, run_rss, code = measured(home, "infer", "run", real)
    assert code == 0
    print(f"repeats={args.repeats} job: gemma3:270m, options.n_ctx={1 << 20} (trained context 32768)")
    print(f"{'refusal, wl infer run -> exit 1 (median)':<48} {statistics.median(refusals):7.3f} s  (goal < 1 s)")
    print(f"{'refusal (max)':<48} {max(refusals):7.3f} s")
    print(f"{'peak RSS of the refusing run (max)':<48} {max(rss):7d} MiB")
    print(f"{'peak RSS of wl --help':<48} {help_rss:7d} MiB  ({help_s:.3f} s)")
    print(f"{'peak RSS of a real 8-token run (model loaded)':<48} {run_rss:7d} MiB  ({run_s:.3f} s)")


if __name__ == "__main__":
    main()
