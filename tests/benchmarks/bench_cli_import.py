"""Start-up cost of `wl --help`, `wl infer --help` and `wl show`: wall time and what Python imports for them.

Run: .venv/bin/python tests/benchmarks/bench_cli_import.py [--wl PATH/TO/wl] [--runs R]

`--wl` picks the installation to time (default: the `wl` beside this Python), so two checkouts compare with the
same script, e.g. `--wl /work/main/.venv/bin/wl`. For each command: the median wall time of R runs, and the
median total of `python -X importtime` (the sum of top-level cumulative import times, in ms) and the fewest
modules imported in the R runs (the first may fill the entry-point cache). The `wl` script itself is run, so
its folder, not the working one, is first on sys.path, as from a shell. `wl show` runs on
a one-item board made in a temporary folder by the `wl` beside this Python (the board format is shared).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)")


def _python_of(wl: Path) -> str:
    """The interpreter a `wl` console script runs under (its shebang)."""
    first = wl.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def _import_total_ms(stderr: str) -> tuple[float, int]:
    """Sum of cumulative times of top-level imports (no indentation) in an -X importtime log, and the number
    of modules imported (a count that machine load does not change)."""
    total = count = 0
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            count += 1
            if m.group(2) == "":
                total += int(m.group(1))
    return total / 1000, count


def measure(
    python: str, wl: Path, argv: list[str], env: dict[str, str], runs: int, cwd: str
) -> tuple[float, float, float, int]:
    """Run the `wl` script itself, as a shell does (its folder first on sys.path, not the working folder), from
    `cwd` (a folder holding no package)."""
    walls, imports, counts = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([python, str(wl), *argv], env=env, capture_output=True, text=True, timeout=120,
                              cwd=cwd)  # fmt: skip
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed: {done.stderr.strip()}")
        timed = subprocess.run([python, "-X", "importtime", str(wl), *argv], env=env, capture_output=True,
                               text=True, timeout=120, cwd=cwd)  # fmt: skip
        ms, count = _import_total_ms(timed.stderr)
        imports.append(ms)
        counts.append(count)
    return statistics.median(walls) * 1000, min(walls) * 1000, statistics.median(imports), min(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wl", type=Path, default=Path(sys.executable).with_name("wl"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    python = _python_of(args.wl)
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
        env["WL_HOME"] = str(Path(tmp) / "home")
        setup = Path(sys.executable).with_name("wl")
        run = lambda *a: subprocess.run([str(setup), *a], env=env, capture_output=True, text=True, check=True)  # noqa: E731
        run("create", str(Path(tmp) / "commons.git"), "--name", "bench")
        run("join", str(Path(tmp) / "commons.git"), "--handle", "bench")
        item = run("--json", "post", "--title", "one item").stdout
        item_id = re.search(r'"id":\s*"(w-[0-9a-f]{10})"', item)
        assert item_id is not None, item
        print(f"wl: {args.wl} (python {python}); median of {args.runs} runs")
        for argv in (["--help"], ["infer", "--help"], ["show", item_id.group(1)]):
            wall, fastest, imported, modules = measure(python, args.wl, argv, env, args.runs, tmp)
            print(f"  wl {' '.join(argv):<22} wall {wall:7.1f} ms (min {fastest:6.1f})   imports {imported:7.1f} ms"
                  f"   {modules} modules")


if __name__ == "__main__":
    main()
