"""An httpx transport that holds a server's reply to the running job's limits while it is read.

A hostile or broken server may drip a byte at a time (each read within the timeout, the whole reply never
done) or answer with hundreds of megabytes. httpx's timeout is per read, and a non-streaming call reads the
whole body into memory, so both are bounded here, below the client: the body is counted chunk by chunk and
reading stops at the byte cap, at the job's wall-clock deadline, or when the run is cancelled. Compressed
replies are not asked for (and refused when sent anyway), so the cap counts the bytes that become the output.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

from wl_infer import limits as _limits
from wl_infer.limits import JobStopped, Limits

_now = threading.local()  # the deadline of the request this thread is sending or reading, for the socket reads


def _socket_timeout(timeout: float | None) -> float | None:
    """A socket read or write may wait at most until the request's deadline (headers included, not only the body)."""
    deadline: float | None = getattr(_now, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise _past_deadline()
    return left if timeout is None else min(timeout, left)


def _past_deadline() -> JobStopped:
    return JobStopped("the server's reply ran past the job's wall-clock deadline", getattr(_now, "deadline_s", None))


class _DeadlineSocket(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _socket_timeout(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _socket_timeout(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        return _DeadlineSocket(self.inner.start_tls(ssl_context, server_hostname, _socket_timeout(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, each connection's reads and writes bounded by the request's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        return _DeadlineSocket(self.inner.connect_tcp(host, port, _socket_timeout(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        return _DeadlineSocket(self.inner.connect_unix_socket(path, _socket_timeout(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _BoundedStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, cap: int | None, deadline: float | None, limits: Limits,
                 bounds: _limits.JobBounds | None) -> None:  # fmt: skip
        self.inner, self.cap, self.deadline, self.limits, self.bounds = inner, cap, deadline, limits, bounds
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        _now.deadline, _now.deadline_s = self.deadline, self.limits.deadline_s
        try:
            yield from self._chunks()
        finally:
            _now.deadline = None

    def _chunks(self) -> Iterator[bytes]:
        for chunk in _timeouts_at_deadline(self.inner, self.deadline):
            self.read += len(chunk)
            if self.cap is not None and self.read > self.cap:
                raise JobStopped("the server's reply is larger than this worker reads", self.cap)
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise JobStopped("the server's reply ran past the job's wall-clock deadline", self.limits.deadline_s)
            if self.bounds is not None:
                self.bounds.check()
            yield chunk

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class BoundedTransport(httpx.BaseTransport):
    """httpx's own transport, with every reply body capped and the whole request held to one deadline."""

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        self.inner = httpx.HTTPTransport(**kwargs)
        pool = getattr(self.inner, "_pool", None)  # httpx keeps httpcore's pool here; without it, body checks only
        if pool is not None and isinstance(getattr(pool, "_network_backend", None), httpcore.NetworkBackend):
            pool._network_backend = _DeadlineBackend(pool._network_backend)

    def _deadline(self, bounds: _limits.JobBounds | None) -> float | None:
        if bounds is not None and bounds.deadline is not None:
            return bounds.deadline
        if self.limits.deadline_s is None:
            return None
        return time.monotonic() + self.limits.deadline_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        bounds = _limits.current()
        if bounds is not None:
            bounds.check()
        deadline = self._deadline(bounds)
        request.headers["Accept-Encoding"] = "identity"
        if deadline is not None:  # no single read may outlast the whole request's deadline either
            left = max(0.001, deadline - time.monotonic())
            timeouts = dict(request.extensions.get("timeout") or {})
            request.extensions["timeout"] = {k: left if v is None else min(v, left)
                                             for k, v in {**dict.fromkeys(("connect", "read", "write", "pool")), **timeouts}.items()}  # fmt: skip
        _now.deadline, _now.deadline_s = deadline, self.limits.deadline_s
        try:
            response = self.inner.handle_request(request)
        except httpx.TimeoutException:
            if deadline is not None and time.monotonic() >= deadline - 0.01:
                raise _past_deadline() from None
            raise
        finally:
            _now.deadline = None
        cap = self.limits.reply_cap()
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise JobStopped(f"the server sent a {encoding[:20]!r}-compressed reply, which this worker does not read")
            declared = response.headers.get("content-length", "")
            if cap is not None and declared.isdigit() and int(declared) > cap:
                raise JobStopped(f"the server announces a {int(declared)}-byte reply, larger than this worker reads", cap)
        except BaseException:
            response.close()
            raise
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_BoundedStream(response.stream, cap, deadline, self.limits, bounds),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


def _timeouts_at_deadline(chunks: Any, deadline: float | None) -> Iterator[bytes]:
    """The body's chunks; a read timing out at the deadline is the deadline's doing, and says so."""
    try:
        yield from chunks
    except httpx.TimeoutException:
        if deadline is not None and time.monotonic() >= deadline - 0.01:
            raise _past_deadline() from None
        raise


def bounded_transport(config: Any) -> BoundedTransport:
    """The transport a server-backed backend gives its httpx client (limits from its BackendConfig)."""
    return BoundedTransport(_limits.limits_of(config))
