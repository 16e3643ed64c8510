"""Small fake Ollama and OpenAI-compatible HTTP servers for the backend tests.

Neither an Ollama server nor an OpenAI-compatible server can be installed here, so the backends run against
these: `ThreadingHTTPServer`s bound to 127.0.0.1 on an ephemeral port, speaking just enough of each API.
Generation is deterministic (derived from prompt and seed), every request is recorded, and failure modes are
switchable (500 with an error body, unknown model, slow reply, server stopped).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MAX_SLOW_S = 2.0  # a slow reply never sleeps longer than this, and wakes early when the server stops
MAX_WORK_S = 30.0  # a generation's compute time (benchmarks) is bounded too, and also wakes on stop
GENERATE_PATHS = ("/api/generate", "/v1/completions")


def fake_completion(prompt: str, seed: int, limit: int) -> tuple[str, str, int]:
    """Deterministic "generation": (text, finish reason, token count); one token per character.

    Same prompt and seed give the same text, another seed gives another; `limit` > 0 cuts the text to that
    many tokens and reports the cut as "length".
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).hexdigest()
    text = f"{prompt[::-1]} -> {digest[:12]}"
    if 0 < limit < len(text):
        return text[:limit], "length", limit
    return text, "stop", len(text)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for connection-refused tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeState:
    """What the fake serves and how it misbehaves; tests flip these between calls."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> extra fields (digest, size)
    version: str = "0.0.0-fake"
    fail_status: int | None = None  # every request answered with this status and an error body
    fail_message: str = "boom: the runner crashed"
    fail_paths: tuple[str, ...] = ()  # when set, only these paths fail
    slow_s: float = 0.0  # sleep this long before answering (bounded by MAX_SLOW_S)
    work_s: float = 0.0  # generation requests alone take this long: a model's compute time (MAX_WORK_S)
    missing_paths: tuple[str, ...] = ()  # paths answered with a bare 404 (an older or smaller server)
    api_key: str | None = None  # when set, requests must carry "Authorization: Bearer <key>"
    describe_models: bool = True  # the OpenAI fake answers GET /v1/models/{id} (OpenAI's retrieve-model call)
    requests: list[Recorded] = field(default_factory=list)

    def last(self, path: str) -> Recorded:
        for rec in reversed(self.requests):
            if rec.path == path:
                return rec
        raise AssertionError(f"no request to {path} (got {[r.path for r in self.requests]})")


class _Handler(BaseHTTPRequestHandler):
    server: _FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout tests)
            pass

    def _handle(self, method: str) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        state.requests.append(Recorded(method, path, body, {k.lower(): v for k, v in self.headers.items()}))
        if state.slow_s:
            self.server.stopping.wait(min(state.slow_s, MAX_SLOW_S))
        if state.work_s and path in GENERATE_PATHS:
            self.server.stopping.wait(min(state.work_s, MAX_WORK_S))
        if state.fail_status is not None and (not state.fail_paths or path in state.fail_paths):
            self._reply(state.fail_status, self.server.api.error_body(state.fail_message))
            return
        if path in state.missing_paths:
            self._reply(404, {"detail": "Not Found"})
            return
        status, payload = self.server.api.route(state, method, path, body, self.headers)
        self._reply(status, payload)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, api: _Api, state: FakeState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self.state = state
        self.stopping = threading.Event()


class _Api:
    def error_body(self, message: str) -> Any:
        return {"error": message}

    def route(self, state: FakeState, method: str, path: str, body: Any, headers: Any) -> tuple[int, Any]:
        raise NotImplementedError


class FakeServer:
    """Runs one fake API in a background thread; use as a context manager so it always stops."""

    api: _Api

    def __init__(self, models: dict[str, dict[str, Any]] | None = None) -> None:
        self.state = FakeState(models=dict(models or {}))
        self._server: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"  # always bound to 127.0.0.1

    def start(self) -> Self:
        self._server = _FakeHTTPServer(self.api, self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Ollama ----------------------------------------------------------------------------------------------


def ollama_digest(name: str) -> str:
    """The fake's manifest digest for a model: bare hex, as /api/tags reports it."""
    return hashlib.sha256(f"weights of {name}".encode()).hexdigest()


class _OllamaApi(_Api):
    def route(self, state: FakeState, method: str, path: str, body: Any, headers: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/version":
            return 200, {"version": state.version}
        if method == "GET" and path == "/api/tags":
            models = []
            for name, extra in state.models.items():
                models.append(
                    {
                        "name": name,
                        "model": name,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": extra.get("size", 1234),
                        "digest": extra.get("digest", ollama_digest(name)),
                        "details": {"format": "gguf", "family": "fake", "parameter_size": "1B"},
                    }
                )
            return 200, {"models": models}
        if method == "POST" and path == "/api/generate":
            model = body.get("model", "")
            if model not in state.models and model + ":latest" not in state.models:
                return 404, {"error": f'model "{model}" not found, try pulling it first'}
            options = body.get("options") or {}
            prompt = body.get("prompt", "")
            text, reason, count = fake_completion(
                prompt, int(options.get("seed", 0)), int(options.get("num_predict", 0))
            )
            reply: dict[str, Any] = {
                "model": model,
                "created_at": "2025-01-01T00:00:00Z",
                "response": text,
                "done": True,
                "done_reason": reason,
                "total_duration": 1000,
                "prompt_eval_count": len(prompt),
                "eval_count": count,
            }
            if not body.get("raw"):  # real Ollama sends context only outside raw mode
                reply["context"] = [ord(c) for c in prompt + text]
            return 200, reply
        return 404, {"error": "404 page not found"}


class FakeOllama(FakeServer):
    """Speaks Ollama's /api/tags, /api/generate and /api/version."""

    api = _OllamaApi()


# -- OpenAI-compatible -----------------------------------------------------------------------------------


class _OpenAIApi(_Api):
    def error_body(self, message: str) -> Any:
        return {"error": {"message": message, "type": "InternalServerError", "code": 500}}

    def route(self, state: FakeState, method: str, path: str, body: Any, headers: Any) -> tuple[int, Any]:
        if state.api_key is not None and headers.get("Authorization") != f"Bearer {state.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        if method == "GET" and path == "/version":
            return 200, {"version": state.version}
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake", **extra}
                for name, extra in state.models.items()
            ]
            return 200, {"object": "list", "data": data}
        if method == "GET" and path.startswith("/v1/models/") and state.describe_models and "/v1/models" not in state.missing_paths:
            from urllib.parse import unquote

            name = unquote(path[len("/v1/models/"):])
            if name not in state.models:
                return 404, {"error": {"message": f"The model `{name}` does not exist.", "code": 404}}
            return 200, {"id": name, "object": "model", "created": 0, "owned_by": "fake", **state.models[name]}
        if method == "POST" and path == "/v1/completions":
            model = body.get("model", "")
            if model not in state.models:
                return 404, {
                    "error": {
                        "message": f"The model `{model}` does not exist.",
                        "type": "NotFoundError",
                        "code": 404,
                    }
                }
            prompt = body.get("prompt", "")
            text, reason, count = fake_completion(
                prompt, int(body.get("seed") or 0), int(body.get("max_tokens") or 0)
            )
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
            if body.get("return_token_ids"):
                choice["token_ids"] = [ord(c) for c in text]
            return 200, {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [choice],
                "usage": {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": count,
                    "total_tokens": len(prompt) + count,
                },
            }
        return 404, {"detail": "Not Found"}


class FakeOpenAI(FakeServer):
    """Speaks the OpenAI-compatible /v1/models and /v1/completions (plus vLLM's /version)."""

    api = _OpenAIApi()
