"""The ASGI application: a hub that keeps the board fresh, security headers, CSRF, and Server-Sent Events.

The hub fetches the remote every `poll` seconds in a worker thread (git and parsing never run on the event
loop), rebuilds the index when the head moved, and wakes every open `/events` stream, whose page then swaps
in its refreshed content. Everything from the board reaches the browser autoescaped, under a
Content-Security-Policy that allows scripts only from /static.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wl_infer.web.data import BoardSource, SourceError
from wl_infer.web.index import Index

log = logging.getLogger("wl.serve")
HERE = Path(__file__).parent
CSRF_COOKIE = "wl_csrf"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
KEEPALIVE_S = 15.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Hub:
    """The current index of the board, kept fresh by a poll loop, and the streams waiting for news."""

    def __init__(self, source: BoardSource, poll: float, allow_post: bool) -> None:
        self.source = source
        self.poll = poll
        self.allow_post = allow_post
        self.csrf = secrets.token_urlsafe(32)
        self.index: Index | None = None
        self.synced_at: str | None = None
        self.sync_error: str | None = None
        self.version = 0
        self.closing = False
        self._cond: asyncio.Condition | None = None
        self._build_lock = threading.Lock()
        self.engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wl-engine")  # one model at a time
        self.item_cache: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    @property
    def current(self) -> Index:
        if self.index is None:
            self.rebuild()
        assert self.index is not None
        return self.index

    def rebuild(self) -> bool:
        """Re-read the board if its head moved; True when the index changed."""
        with self._build_lock:
            head = self.source.head()
            if self.index is not None and self.index.state.head == head:
                return False
            previous = self.index
            state = self.source.read_state(previous.state if previous else None)
            self.index = Index.build(state, previous)
            self.item_cache.clear()
            return True

    def sync_once(self) -> bool:
        """Fetch, then rebuild; a remote that cannot be reached is reported, and the local copy still shown."""
        if self.source.has_remote:
            try:
                self.source.refresh()
                self.synced_at, self.sync_error = _now(), None
            except SourceError as e:
                self.sync_error = str(e)
        else:
            self.synced_at, self.sync_error = _now(), "this board has no remote (local only)"
        return self.rebuild()

    def status(self) -> dict[str, Any]:
        index = self.current
        return {
            "head": index.state.head,
            "synced_at": self.synced_at,
            "sync_error": self.sync_error,
            "board": index.state.meta,
            "handle": self.source.handle,
            "allow_post": self.allow_post,
            "poll_s": self.poll,
        }

    async def notify(self) -> None:
        async with self.cond:
            self.version += 1
            self.cond.notify_all()

    async def wait(self, version: int, timeout: float) -> int:
        async with self.cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cond.wait_for(lambda: self.version != version or self.closing), timeout)
            return self.version

    async def sync_now(self) -> None:
        await asyncio.to_thread(self.sync_once)
        await self.notify()

    async def poll_loop(self) -> None:
        while not self.closing:
            started = time.monotonic()
            try:
                await self.sync_now()
            except Exception as e:  # noqa: BLE001 - a bad poll is reported on the pages; the server stays up
                self.sync_error = f"could not read the board: {type(e).__name__}: {e}"
                log.warning("poll failed: %s", self.sync_error)
                await self.notify()
            await asyncio.sleep(max(0.05, self.poll - (time.monotonic() - started)))

    async def run_engine(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Posting and verifying run off the event loop, one at a time (verifying loads a model)."""
        return await asyncio.get_running_loop().run_in_executor(self.engine, fn, *args)


class SecurityHeaders:
    """Adds the CSP and friends to every response, streaming ones included (pure ASGI, no buffering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, wrapped)


def csrf_ok(hub: Hub, request: Request, form_token: Any) -> bool:
    """Double submit: the form's token and the SameSite cookie must both be this server's secret."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not isinstance(form_token, str):
        return False
    good = hmac.compare_digest(form_token.encode(), hub.csrf.encode())
    good = hmac.compare_digest(cookie.encode(), hub.csrf.encode()) and good
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    return good


async def events(request: Request) -> StreamingResponse:
    """Server-Sent Events: a `sync` event after every poll (head, time, error); pages refresh on a new head."""
    hub: Hub = request.app.state.hub

    async def stream() -> AsyncIterator[bytes]:
        version = -1
        while not hub.closing:
            if version != hub.version:
                version = hub.version
                data = {"head": hub.current.state.head, "synced_at": hub.synced_at, "sync_error": hub.sync_error}
                yield b"event: sync\ndata: " + orjson.dumps(data) + b"\n\n"
            new = await hub.wait(version, KEEPALIVE_S)
            if new == version and not hub.closing:
                yield b": keepalive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def create_app(
    source: BoardSource,
    *,
    poll: float = 5.0,
    allow_post: bool = False,
    hosts: list[str] | None = None,
    start_polling: bool = True,
) -> Starlette:
    """The app for one rig's board. `hosts` are the Host headers accepted (DNS-rebinding protection)."""
    from wl_infer.web import api, pages

    hub = Hub(source, poll, allow_post)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(hub.sync_once)  # fetch before serving: the first page is fresh
        task = asyncio.create_task(hub.poll_loop()) if start_polling else None
        try:
            yield
        finally:
            hub.closing = True
            await hub.notify()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            hub.engine.shutdown(wait=False, cancel_futures=True)

    routes: list[Any] = [
        *pages.routes(),
        *api.routes(),
        Route("/events", events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["127.0.0.1", "localhost", "::1"]),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers=pages.handlers())
    app.state.hub = hub
    return app

