"""Helpers for infer tests: a commons with three rigs, driven through the real `wl` CLI (CliRunner)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner, Result

from board.cli.main import cli
from board.home import Home
from board.service import Board


@dataclass
class Rigs:
    root: Path
    commons: Path
    env: dict[str, str]

    def home(self, handle: str) -> Path:
        return self.root / handle

    def wl(self, handle: str, *args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, ["--home", str(self.home(handle)), *args], env={**self.env, **(env or {})})

    def wl_json(self, handle: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
        res = self.wl(handle, "--json", *args, env=env)
        data = orjson.loads(res.stdout) if res.stdout.strip() else None
        return res.exit_code, data

    def board(self, handle: str) -> Board:
        return Board(Home(self.home(handle)))

    def item(self, handle: str, item_id: str) -> Any:
        with self.board(handle) as b:
            b.refresh()
            return b.get_item(item_id)


def make_rigs(root: Path, handles: tuple[str, ...] = ("alice", "bob", "carol"), env: dict[str, str] | None = None) -> Rigs:
    rigs = Rigs(root, root / "commons.git", dict(env or {}))
    res = CliRunner().invoke(cli, ["create", str(rigs.commons), "--name", "test"])
    assert res.exit_code == 0, res.output
    for h in handles:
        r = rigs.wl(h, "join", str(rigs.commons), "--handle", h)
        assert r.exit_code == 0, r.output
    return rigs


def post(rigs: Rigs, handle: str, *args: str, env: dict[str, str] | None = None) -> str:
    code, data = rigs.wl_json(handle, "infer", "post", *args, env=env)
    assert code == 0, data
    return str(data["id"])


def wait_with_peak_rss(proc: Any, poll_s: float = 0.02) -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of a child, from its own VmHWM in /proc polled until it exits.

    Not wait4's ru_maxrss: on Linux a child inherits its parent's high-water mark across fork and exec, so a
    child of a large test process would report the parent's memory."""
    import time as _time

    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        _time.sleep(poll_s)
    return int(proc.returncode), peak


def run_with_tty_stderr(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, bytes, bytes]:
    """A real `wl` process whose stderr is a pseudo-terminal (what a person sees) and stdout a pipe:
    (exit code, stdout, everything drawn on the terminal)."""
    import pty

    wl = str(Path(sys.executable).with_name("wl"))
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([wl, *args], env={**os.environ, "COLUMNS": "100", **env}, stdout=subprocess.PIPE,
                                stderr=follower, stdin=subprocess.DEVNULL)  # fmt: skip
        os.close(follower)
        follower = -1
        shown = b""
        while True:  # drain the terminal as it is drawn, so the process never blocks on a full buffer
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed its end
                break
            if not chunk:
                break
            shown += chunk
        out = proc.stdout.read() if proc.stdout else b""
        code = proc.wait(timeout=timeout)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    return code, out, shown
