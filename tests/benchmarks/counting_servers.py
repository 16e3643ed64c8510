"""Git servers for the scale benchmarks that count requests on the SERVER side, so a figure never depends on
the client code being measured: `git daemon --verbose` with its log in a file, git's own `git http-backend`
behind tests/remotes.py's CGI handler counting each fetch's and push's first request, and a `post-receive`
hook that records every accepted ref update (`<old> <new> <ref>`), so commits on refs deleted later (claim
lanes folded into main) still count.

Used by bench_scale.py and bench_push_cost.py; every server binds 127.0.0.1 and is stopped by its context.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from remotes import GIT, GitDaemon, _CgiHandler, wait_for_port  # noqa: E402

ZERO = b"0" * 40
UPDATES_LOG = "bench-updates.log"  # in the bare repo: one `<old> <new> <ref>` line per accepted update


class CountingServer(Protocol):
    def url(self, name: str) -> str: ...

    def counts(self) -> Counter[str]: ...


# --- git daemon --------------------------------------------------------------------------------------------
class CountingDaemon(GitDaemon):
    """`git daemon --verbose` over base; counts() reads its log (`Request <service>`: one per connection)."""

    def __init__(self, base: Path, log: Path) -> None:
        super().__init__(base)
        self.log = log

    def start(self) -> None:
        assert GIT is not None, "git is not installed"
        # git-daemon itself, not the `git` wrapper that runs it as a child: its reaped children's CPU is then
        # the server's cost per request (bench_push_cost.py reads it from /proc)
        exec_path = subprocess.run([GIT, "--exec-path"], capture_output=True, text=True).stdout.strip()
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [str(Path(exec_path, "git-daemon")), "--verbose", "--log-destination=stderr", "--reuseaddr",
                 f"--base-path={self.base}", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1",
                 f"--port={self.port}", str(self.base)],
                stdout=subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def counts(self) -> Counter[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return Counter(
            m.group(1) for m in re.finditer(r"Request (receive-pack|upload-pack|upload-archive) for", text)
        )


# --- git http-backend ---------------------------------------------------------------------------------------
class _CountingCgi(_CgiHandler):
    tally: Counter[str]
    lock: threading.Lock

    def _counted(self) -> None:
        # One count per attempt, as git daemon counts connections: every fetch or push starts with the GET of
        # info/refs?service=git-<service>; a push the client abandons after the advertisement sends no POST.
        path, _, query = self.path.partition("?")
        if self.command == "GET" and path.endswith("/info/refs") and query.startswith("service=git-"):
            with self.lock:
                self.tally[query.removeprefix("service=git-").partition("&")[0]] += 1
        self._run()

    do_GET = _counted
    do_POST = _counted


class CountingHttpBackend:
    """git http-backend (as CGI) over base at http://127.0.0.1:<port>/<name>; counts requests per service."""

    def __init__(self, base: Path) -> None:
        self.tally: Counter[str] = Counter()
        handler = type(
            "Handler", (_CountingCgi,), {"base": base, "tally": self.tally, "lock": threading.Lock()}
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def counts(self) -> Counter[str]:
        return Counter(self.tally)


@contextlib.contextmanager
def serving(kind: str, base: Path) -> Iterator[CountingServer]:
    """A counting server of `kind` ("daemon" or "http-backend") over the repos under base, for the block."""
    base.mkdir(parents=True, exist_ok=True)
    server: CountingDaemon | CountingHttpBackend
    server = CountingDaemon(base, base.parent / f"daemon-{os.getpid()}.log") if kind == "daemon" \
        else CountingHttpBackend(base)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- accepted ref updates ---------------------------------------------------------------------------------
def install_update_log(repo: Path) -> None:
    """A post-receive hook appending git's `<old> <new> <ref>` lines and a `push` line (git runs it once per
    accepted push, after the update; one cheap `cat`)."""
    hook = repo / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(f"#!/bin/sh\n{{ cat; echo push; }} >> {shlex.quote(str(repo / UPDATES_LOG))}\n")
    hook.chmod(0o755)


def accepted_updates(repo: Path) -> list[tuple[bytes, bytes, str]]:
    path = repo / UPDATES_LOG
    out = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        if line == b"push":
            continue
        old, new, ref = line.split(b" ", 2)
        out.append((old, new, ref.decode(errors="replace")))
    return out


def accepted_pushes(repo: Path) -> int:
    """Pushes the server accepted so far (one post-receive run each, however many refs they updated)."""
    path = repo / UPDATES_LOG
    return path.read_bytes().splitlines().count(b"push") if path.exists() else 0


def landed_commits(repo: Path, updates: list[tuple[bytes, bytes, str]], before: list[bytes]) -> int:
    """Distinct commits that accepted updates made reachable and that were not reachable from `before`."""
    from dulwich.repo import Repo

    tips = list({new for _, new, _ in updates if new != ZERO})
    if not tips:
        return 0
    r = Repo(str(repo))
    try:
        return sum(1 for _ in r.get_walker(include=tips, exclude=before))
    finally:
        r.close()
