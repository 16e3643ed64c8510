"""Hostile HTTP servers for issue 10: an Ollama-speaking server (and an OpenAI-compatible one) that misbehave.

Bound to 127.0.0.1 on an ephemeral port, like tests/fake_servers.py, but written at the socket level so a reply
can be as hostile as a real attacker's: `drip` sends a valid reply one byte every 2 s, `flood` answers an
8-token job with 200 MB (chunked, no Content-Length, so only a reader that counts can stop it), `drip-headers`
drips its response headers instead (which no body reader sees), `invalid`
answers generation with bytes that are not JSON, and `digest` reports weights other than the job pinned.
Listing (`/api/tags`, `/v1/models`) always answers honestly so the backend gets as far as generation. Every
reply is bounded: the server stops writing when the client goes away or the server is stopped, and counts
what it sent so tests can show the client stopped reading.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

DRIP_EVERY_S = 2.0
FLOOD_BYTES = 200 * 1024 * 1024
CHUNK = 256 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        s = self.server
        if self.path.startswith("/api/version"):
            self._json({"version": "0.0.0-hostile"})
        elif self.path.startswith("/api/tags"):
            digest = "f" * 64 if s.mode == "digest" else s.digest
            self._json({"models": [{"name": s.model, "model": s.model, "size": 1, "digest": digest}]})
        elif self.path.startswith("/v1/models"):
            self._json({"object": "list", "data": [{"id": s.model, "object": "model"}]})
        else:
            self._json({"version": "0.0.0-hostile"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        s = self.server
        s.generations += 1
        try:
            if s.mode == "drip":
                self._drip()
            elif s.mode == "drip-headers":
                self._drip_headers()
            elif s.mode == "flood":
                self._flood()
            elif s.mode == "invalid":
                body = b"<html>this is not json{"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._json(self._reply("fine"))
        except OSError:  # the client stopped reading: that is the point
            pass

    def _reply(self, text: str) -> dict[str, Any]:
        if self.path.startswith("/v1/"):
            return {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "model": self.server.model}
        return {"model": self.server.model, "response": text, "done": True, "done_reason": "stop"}

    def _drip(self) -> None:
        body = json.dumps(self._reply("a slow answer that never quite arrives" * 4)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        self._one_byte_at_a_time(body)

    def _drip_headers(self) -> None:
        self._one_byte_at_a_time(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 4000)

    def _one_byte_at_a_time(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.server.stopping.wait(DRIP_EVERY_S):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            self.server.sent += 1

    def _flood(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = json.dumps(self._reply(""))
        cut = head.index('""') + 1  # the output string opens here and is filled with the flood
        parts = [head[:cut].encode()] + [b"a" * CHUNK] * (FLOOD_BYTES // CHUNK) + [head[cut:].encode()]
        for part in parts:
            if self.server.stopping.is_set():
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.server.sent += len(part)
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, mode: str, model: str, digest: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.model, self.digest = mode, model, digest
        self.stopping = threading.Event()
        self.sent = 0
        self.generations = 0


class HostileServer:
    """One hostile server in a background thread; a context manager, so it always stops."""

    def __init__(self, mode: str, model: str = "tiny:1b", digest: str = "ab" * 32) -> None:
        assert mode in ("drip", "drip-headers", "flood", "invalid", "digest", "honest")
        self.mode, self.model, self.digest = mode, model, digest
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def sent(self) -> int:
        return self._server.sent if self._server else 0

    @property
    def generations(self) -> int:
        return self._server.generations if self._server else 0

    def __enter__(self) -> Self:
        self._server = _Server(self.mode, self.model, self.digest)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
