"""Helpers for the `wl serve` tests: the app on a rig's real board, quick posts, bounded waits."""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infer_helpers import Rigs

from board.ids import new_item_id, utcnow
from wl_infer.web.app import Hub, create_app
from wl_infer.web.data import BoardSource

with warnings.catch_warnings():  # starlette asks for httpx2, which is not packaged here; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

XSS_SCRIPT = "<script>document.title='pwned';alert(1)</script>"
XSS_ONERROR = '<img src=x onerror="document.title=\'pwned\';alert(2)" id="injected">'


@contextlib.contextmanager
def client_for(home: Path, *, poll: float = 0.2, allow_post: bool = False, polling: bool = True) -> Iterator[tuple[TestClient, Hub]]:
    """The app for this home, lifespan and poll loop running, through Starlette's HTTP test client."""
    source = BoardSource(home)
    app = create_app(source, poll=poll, allow_post=allow_post, hosts=["testserver"], start_polling=polling)
    try:
        with TestClient(app, base_url="http://testserver") as client:
            yield client, app.state.hub
    finally:
        source.close()


def post_items(rigs: Rigs, handle: str, titles: list[str], **args: Any) -> list[str]:
    """Post each title as `handle`, pushed to the commons (one Board: no process per post)."""
    ids = []
    with rigs.board(handle) as board:
        for title in titles:
            item_id = new_item_id(title, utcnow())
            board.mutate(board.new_op("post", item_id, title=title, **args))
            ids.append(item_id)
    return ids


def op(rigs: Rigs, handle: str, name: str, item_id: str | None = None, **args: Any) -> Any:
    with rigs.board(handle) as board:
        return board.mutate(board.new_op(name, item_id, **args))


def wait_for(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="row-(w-[0-9a-f]{10})"', html)


@contextlib.contextmanager
def running_serve(home: Path, *args: str, poll: float = 1.0) -> Iterator[str]:
    """`wl serve` as a real process on 127.0.0.1 and a free port; stopped (SIGINT, then kill) afterwards."""
    import os
    import signal
    import subprocess

    from remotes import WL, free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "WL_HOME": str(home)}
    env.pop("WL_DEBUG", None)
    proc = subprocess.Popen([WL, "serve", "--port", str(port), "--poll", str(poll), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"wl serve did not start: {proc.communicate(timeout=10)[0]}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
