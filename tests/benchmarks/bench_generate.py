"""Generation speed of the llama-cpp backend, and a bare llama-cpp-python baseline to compare it with.

  python tests/benchmarks/bench_generate.py                 # both, in fresh processes, medians + tokens/s
  python tests/benchmarks/bench_generate.py --bare --prompt P --max-tokens N     # prints elapsed seconds
  python tests/benchmarks/bench_generate.py --backend --prompt P --max-tokens N  # same, through LlamaCppBackend

`--bare` is what a user would write by hand: `Llama(...)` then a greedy completion, model load included.
`--backend` is the same work through wl-infer (resolve, digest check, load, generate). The team compares
`wl infer run` end to end against the bare figure (goal: at most 1.15x).
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

PROMPT = "Write a short story about a robot who learns to paint."


def _cache_env() -> None:
    os.environ.setdefault("WL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "wl-model-cache"))


def _threads(value: int | None) -> int:
    from wl_infer.backends.llama_cpp import default_threads

    return default_threads(value)


def model_path(home: Path | None = None) -> str:
    """The embedded GGUF's path (assembled into the cache on first use)."""
    from wl_infer.backends.gguf import resolve_gguf

    path = resolve_gguf("gemma3:270m", home).path
    assert path is not None
    return path


def run_bare(path: str, prompt: str, max_tokens: int, threads: int) -> dict[str, float]:
    """A hand-written llama-cpp-python script: load the GGUF, greedy completion of the prompt."""
    t0 = time.perf_counter()
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=2048,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        seed=42,
        verbose=False,
    )
    t1 = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=42)
    t2 = time.perf_counter()
    n = int(out["usage"]["completion_tokens"])  # type: ignore[index]
    llm.close()
    return {"elapsed_s": t2 - t0, "load_s": t1 - t0, "generate_s": t2 - t1, "tokens": n}


def run_backend(
    prompt: str, max_tokens: int, threads: int | None, home: Path, warm: bool = False
) -> dict[str, float]:
    """The same work through wl-infer's backend: resolve + digest check + load + greedy generation."""
    t0 = time.perf_counter()
    from wl_infer.backends import BackendConfig
    from wl_infer.backends.llama_cpp import LlamaCppBackend
    from wl_infer.codec import Job

    backend = LlamaCppBackend(BackendConfig(home=home, threads=threads))
    job = Job(prompt=prompt, model="gemma3:270m", max_tokens=max_tokens, backend="llama-cpp")
    gen = backend.generate(job)
    t1 = time.perf_counter()
    result = {"elapsed_s": t1 - t0, "generate_s": gen.elapsed_s, "tokens": len(gen.tokens or [])}
    if warm:  # engine already loaded: pure generation speed (after the timed part)
        again = backend.generate(job)
        result["tokens_per_s"] = len(again.tokens or []) / again.elapsed_s
    backend.close()
    return result


def _child(mode: str, args: argparse.Namespace, *extra: str) -> tuple[float, dict[str, float]]:
    cmd = [sys.executable, __file__, f"--{mode}", "--json", "--prompt", args.prompt, *extra]
    cmd += ["--max-tokens", str(args.max_tokens), "--home", str(args.home)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    model_path(args.home)  # assemble outside the timings
    rows: dict[str, list[tuple[float, dict[str, float]]]] = {"bare": [], "backend": []}
    for _ in range(args.repeats):
        for mode in ("bare", "backend"):  # interleaved so that load on the machine hits both alike
            rows[mode].append(_child(mode, args))
    print(f"prompt={args.prompt!r} max_tokens={args.max_tokens} threads={_threads(args.threads)}")
    for mode, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        inner = statistics.median(r[1]["elapsed_s"] for r in runs)
        print(
            f"{mode:>8}: load+generate {inner:.3f}s in-process, {wall:.3f}s process wall (median of {len(runs)})"
        )
    bare = statistics.median(r[1]["elapsed_s"] for r in rows["bare"])
    ours = statistics.median(r[1]["elapsed_s"] for r in rows["backend"])
    tps = statistics.median(_child("backend", args, "--warm")[1]["tokens_per_s"] for _ in range(args.repeats))
    print(f"backend/bare (load+generate): {ours / bare:.2f}x; warm generation {tps:.1f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--bare", action="store_true", help="time a bare llama-cpp-python script")
    mode.add_argument("--backend", action="store_true", help="time LlamaCppBackend (load + generate)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by the comparison)")
    parser.add_argument("--warm", action="store_true", help="with --backend: also time a second, warm run")
    args = parser.parse_args()
    _cache_env()
    args.home = args.home or Path(tempfile.mkdtemp(prefix="wl-bench-"))
    if args.bare:
        result = run_bare(model_path(args.home), args.prompt, args.max_tokens, _threads(args.threads))
    elif args.backend:
        result = run_backend(args.prompt, args.max_tokens, args.threads, args.home, args.warm)
    else:
        compare(args)
        return
    print(json.dumps(result) if args.json else f"{result['elapsed_s']:.3f}")


if __name__ == "__main__":
    main()
