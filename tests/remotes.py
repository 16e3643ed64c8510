"""Real remotes on 127.0.0.1 for the board tests: a bare commons, `git daemon`, dulwich's HTTP server, rigs.

Nothing here is mocked: every remote is a real repository served by a real server, so the races and the
offline/online behaviour the tests assert are the ones users get. Every server binds 127.0.0.1, every wait
is bounded, and every server is stopped by the fixture that started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any

import pytest
from dulwich.errors import NotGitRepository
from dulwich.repo import Repo
from dulwich.server import Backend
from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_wsgi_chain

from board.home import Home
from board.ops import Op, op_from_message
from board.records import Item
from board.service import Board, MutationResult, SyncReport, create_commons, join
from board.store import MAIN, Store

WL = str(Path(sys.executable).with_name("wl"))
GIT = shutil.which("git")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# --- the commons ------------------------------------------------------------------------------------
def make_commons(base: Path, name: str = "commons.git") -> Path:
    path = base / name
    create_commons(path, "test board")
    return path


def remote_head(path: Path) -> bytes:
    store = Store(path)
    try:
        head = store.ref(MAIN)
        assert head is not None
        return head
    finally:
        store.close()


def remote_ops(path: Path) -> list[tuple[str, Op | None]]:
    """(message, decoded operation) for every commit on the bare repo's main, oldest first."""
    store = Store(path)
    try:
        head = store.ref(MAIN)
        assert head is not None
        out = []
        for sha in store.first_parent_chain(head, None):
            msg = store.commit(sha).message.decode()
            out.append((msg, op_from_message(msg)))
        return out
    finally:
        store.close()


def main_ops(path: Path) -> list[Op]:
    """Main's operations, oldest first, each fold's carried `done`s in its place (board/folds.py)."""
    from board.folds import carried

    out: list[Op] = []
    for _, op in remote_ops(path):
        if op is not None:
            out.extend(carried(op) if op.op == "fold" else [op])
    return out


def lane_ops(path: Path, item_id: str) -> list[Op]:
    """The operations on the item's claim lane in the bare commons, as a reader folds them (oldest first)."""
    from board import lanes
    from board.view import TreeView

    store = Store(path)
    try:
        head = store.ref(MAIN)
        tip = store.ref(lanes.remote_ref(item_id))
        if head is None or tip is None:
            return []
        view = TreeView(store, store.tree_id(head))
        lane = lanes.fold(store, view, view.meta()["board_id"], item_id, tip)
        return lane.ops if lane is not None else []
    finally:
        store.close()


def claims_of(path: Path, item_id: str) -> list[str]:
    """Who claimed the item, as the commons recorded it: on main (a claim, or the lane claim a done carries)
    and on the live lane."""
    out = []
    for op in main_ops(path):
        if op.id == item_id and op.op == "claim":
            out.append(op.by)
        elif op.id == item_id and op.op == "done" and isinstance(op.args.get("lane"), dict):
            out.append(op.by)
    out += [op.by for op in lane_ops(path, item_id) if op.op == "claim"]
    return out


def remote_item(path: Path, item_id: str) -> Item:
    """The item as the commons holds it: main's record, or the record its claim lane leaves (board/lanes.py)."""
    from board import lanes
    from board.view import TreeView

    store = Store(path)
    try:
        head = store.ref(MAIN)
        assert head is not None
        view = TreeView(store, store.tree_id(head))
        tip = store.ref(lanes.remote_ref(item_id))
        if tip is not None:
            lane = lanes.fold(store, view, view.meta()["board_id"], item_id, tip)
            if lane is not None:
                return lane.item
        item = view.item(item_id)
        assert item is not None
        return item
    finally:
        store.close()


def commit_file_to_remote(
    path: Path, relpath: str, data: bytes | None, message: str = "hand edit\n"
) -> bytes:
    """Commit one file straight into a bare repo (as a careless or hostile participant might)."""
    from board.store import NewObjects

    store = Store(path)
    try:
        head = store.ref(MAIN)
        commit = store.make_commit(head, {relpath: data}, message, "mallory", NewObjects())
        assert store.set_ref(MAIN, commit, head)
        return commit
    finally:
        store.close()


# --- git daemon ---------------------------------------------------------------------------------------
class GitDaemon:
    """`git daemon` serving every repo under base (receive-pack on) at git://127.0.0.1:<port>/."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        assert GIT is not None
        self.proc = subprocess.Popen(
            [
                GIT,
                "daemon",
                "--reuseaddr",
                f"--base-path={self.base}",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None


def have_git_daemon() -> bool:
    if GIT is None:
        return False
    exec_path = subprocess.run([GIT, "--exec-path"], capture_output=True, text=True).stdout.strip()
    return Path(exec_path, "git-daemon").exists()


@contextlib.contextmanager
def running_git_daemon(base: Path) -> Iterator[GitDaemon]:
    """A git daemon over base for the duration of the block (tests skip where git daemon is missing)."""
    if not have_git_daemon():
        pytest.skip("git daemon is not installed")
    base.mkdir(parents=True, exist_ok=True)
    daemon = GitDaemon(base)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# --- dulwich's smart HTTP server ---------------------------------------------------------------------
class DirBackend(Backend):
    """Repos under one folder, opened afresh per request as a real server would (no state shared by threads).

    dulwich's handlers never close the repos they open; each request's repos are closed when it ends, or a
    long test run would exhaust file descriptors.
    """

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base.resolve()
        self.local = threading.local()

    def open_repository(self, path: str | bytes) -> Repo:
        name = os.fsdecode(path).lstrip("/")
        target = (self.base / name).resolve()
        if target.parent != self.base or not target.is_dir():
            raise NotGitRepository(f"no repository at {path!r}")
        repo = Repo(str(target))
        getattr(self.local, "opened", []).append(repo)
        return repo


class ThreadingGitServer(ThreadingMixIn, WSGIServerLogger):
    """One thread per request, so two pushes really are handled at the same time."""

    daemon_threads = True


class HttpGit:
    """dulwich.web serving every repo under base at http://127.0.0.1:<port>/<name>.

    `on_receive_pack`, when set, wraps each push request: it gets (environ, start_response, app) and may
    forward it, drop it, or forward it and then fail, to play a server that vanishes mid-push.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.backend = DirBackend(base)
        self.app = make_wsgi_chain(self.backend)
        self.on_receive_pack: Callable[..., Iterable[bytes]] | None = None
        self.pushes = 0
        self.server: ThreadingGitServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        opened: list[Repo] = []
        self.backend.local.opened = opened
        try:
            path = environ.get("PATH_INFO", "")
            is_push = environ.get("REQUEST_METHOD") == "POST" and path.endswith("git-receive-pack")
            if is_push:
                self.pushes += 1
            hook = self.on_receive_pack
            if is_push and hook is not None:
                yield from hook(environ, start_response, self.app)
            else:
                yield from self.app(environ, start_response)
        finally:
            for repo in opened:
                repo.close()

    def start(self) -> None:
        from wsgiref.simple_server import make_server

        self.server = make_server(
            "127.0.0.1",
            self.port,
            self._wsgi,
            server_class=ThreadingGitServer,
            handler_class=WSGIRequestHandlerLogger,
        )
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(timeout=5)
            self.server = None


@contextlib.contextmanager
def running_http(base: Path) -> Iterator[HttpGit]:
    base.mkdir(parents=True, exist_ok=True)
    server = HttpGit(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- rigs -----------------------------------------------------------------------------------------------
@dataclass
class Rig:
    """One participant: its own home (config, key, clone), driven in-process through board.service."""

    home: Path
    handle: str

    def board(self) -> Board:
        return Board(Home(self.home))

    def op(self, name: str, item_id: str | None = None, push: bool = True, **args: Any) -> MutationResult:
        with self.board() as b:
            return b.mutate(b.new_op(name, item_id, **args), push=push)

    def post(self, title: str = "a wanted thing", push: bool = True, **args: Any) -> str:
        from board.ids import new_item_id, utcnow

        item_id = new_item_id(title, utcnow())
        self.op("post", item_id, push=push, title=title, **args)
        return item_id

    def claim(self, item_id: str, push: bool = True, lease_seconds: int = 1800) -> MutationResult:
        return self.op("claim", item_id, push=push, lease_seconds=lease_seconds)

    def done(self, item_id: str, evidence: str, push: bool = True) -> MutationResult:
        from board.ids import new_completion_id

        return self.op("done", item_id, push=push, evidence=evidence, completion_id=new_completion_id())

    def sync(self) -> SyncReport:
        with self.board() as b:
            return b.sync()

    def refresh(self) -> None:
        with self.board() as b:
            b.refresh()

    def item(self, item_id: str) -> Item:
        """The item as this rig's local copy sees it."""
        with self.board() as b:
            return b.get_item(item_id)

    def pending(self) -> list[Op]:
        with self.board() as b:
            return [op for _, op in b.pending()]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["WL_HOME"] = str(self.home)
        env.pop("WL_DEBUG", None)
        return env

    def wl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real `wl` executable as this rig."""
        return subprocess.run([WL, *args], env=self.env(), capture_output=True, text=True, timeout=timeout)


def join_rig(base: Path, url: str, handle: str) -> Rig:
    rig = Rig(base / f"home-{handle}", handle)
    board, _ = join(Home(rig.home), url, handle)
    board.close()
    return rig


def set_remote(rig: Rig, url: str) -> None:
    Home(rig.home).set_config("remote", url)


# --- git's own http-backend, as CGI behind a small local HTTP server ----------------------------------
class _CgiHandler(BaseHTTPRequestHandler):
    """Runs `git http-backend` per request, the way a web server's CGI support would."""

    base: Path

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _run(self) -> None:
        assert GIT is not None
        path, _, query = self.path.partition("?")
        body = self._body() if self.command == "POST" else b""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "tester",  # lets http-backend accept pushes
            "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _run
    do_POST = _run


class GitHttpBackend:
    """git http-backend serving every repo under base at http://127.0.0.1:<port>/<name>."""

    def __init__(self, base: Path) -> None:
        self.base = base
        handler = type("Handler", (_CgiHandler,), {"base": base})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def running_git_http_backend(base: Path) -> Iterator[GitHttpBackend]:
    if GIT is None:
        pytest.skip("git is not installed")
    server = GitHttpBackend(base)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


# --- raw git, as a participant who bypasses wl ------------------------------------------------------------
def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert GIT is not None
    env = {**os.environ, "GIT_AUTHOR_NAME": "mallory", "GIT_AUTHOR_EMAIL": "mallory@example.invalid",
           "GIT_COMMITTER_NAME": "mallory", "GIT_COMMITTER_EMAIL": "mallory@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or Path.cwd())}
    proc = subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc
