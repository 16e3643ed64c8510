"""The `openai` backend: any OpenAI-compatible server (vLLM serve, llama.cpp server, hosted brokers).

Plain HTTP `POST /v1/completions` with temperature 0 and the job's seed. The weights can be pinned only when
the server reports a digest for the model (`/v1/models/{id}`, else its entry in `/v1/models`: a `digest`,
`sha256` or `model_digest` field, at the top or in llama.cpp's `meta`); a job that pins one the server does
not report, or reports differently, is refused, since nothing here could confirm which weights answered. A
job that pins none records `model_digest: null` (verify then says the weights are unbound) and whatever
weights facts the server gives (`model_meta`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from wl_infer.backends._http import (
    SAMPLING_OPTIONS,
    normalise_digest,
    pick_options,
    server_message,
    transport_failure,
    wl_version,
)
from wl_infer.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    Generation,
    ModelInfo,
    ModelNotFound,
)
from wl_infer.codec import Job

# OpenAI-compatible servers name the weights' hash differently, when they report it at all.
_DIGEST_FIELDS = ("digest", "sha256", "model_digest")
# Facts about the weights llama.cpp's server reports in an entry's `meta` (kept in the envelope: they differ
# when the weights do). Only these, as plain numbers: the rest of a server's entry is not the model's.
_META_FIELDS = ("n_params", "size", "n_vocab", "n_ctx_train", "n_embd", "vocab_type")
# Extensions some servers accept; sent only when the job's options ask for them.
_EXTRA_OPTIONS = frozenset({"return_token_ids"})


def normalise_base(url: str) -> str:
    """`http://h:8000`, `http://h:8000/`, `http://h:8000/v1` and `http://h:8000/v1/` all mean the same server."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base


class OpenAIBackend(Backend):
    """Runs jobs on an OpenAI-compatible completions endpoint over HTTP."""

    name = "openai"
    can_score = False
    reports_digest = False  # only some servers do; resolve() says per model

    @classmethod
    def unavailable(cls, config: BackendConfig) -> str | None:
        return None if config.openai_base_url else "no server configured (set WL_OPENAI_BASE_URL)"

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        raw = self.config.openai_base_url or os.environ.get("WL_OPENAI_BASE_URL") or ""
        self.base_url = normalise_base(raw) if raw else ""
        self._api_key = (
            self.config.openai_api_key
            or os.environ.get("WL_OPENAI_API_KEY")
            or os.environ.get("OPENAI_API_KEY")
        )
        self._client: Any = None
        self._version: str | None = None
        self._version_known = False
        self._seen: dict[str, dict[str, Any]] = {}  # the latest entry the server gave for each model

    # -- plumbing -------------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        if not self.base_url:
            raise BackendUnavailable(
                self.name, "no server configured (set WL_OPENAI_BASE_URL or the openai_base_url setting)"
            )
        if self._client is None:
            import httpx

            headers = {"Accept": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            # issue 10: the reply is capped and held to the job's deadline while it is read
            from wl_infer.bounded_http import bounded_transport

            self._client = httpx.Client(base_url=self.base_url, timeout=self.config.timeout, headers=headers,
                                        transport=bounded_transport(self.config))
        return self._client

    def _request(
        self, what: str, method: str, path: str, body: dict[str, Any] | None = None, model: str | None = None
    ) -> tuple[int, Any]:
        """(status, parsed JSON) for a successful reply; errors become one-line BackendErrors.

        A 404 is returned to the caller (status, None) when `model` is None, so callers can tell a missing
        endpoint from a missing model.
        """
        import httpx

        client = self._get_client()
        try:
            reply = client.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise BackendUnavailable(
                self.name, f"cannot reach the OpenAI-compatible server at {self.base_url} (is it running?)"
            ) from None
        except httpx.HTTPError as exc:  # a timeout, or a connection that broke
            raise transport_failure(self.name, what, self.base_url, self.config.timeout, exc) from None
        status = reply.status_code
        if status >= 400:
            message = server_message(reply.content)
            if status in (401, 403):
                raise BackendError(
                    self.name,
                    f"{what} refused by {self.base_url} (HTTP {status}: {message}); set WL_OPENAI_API_KEY",
                )
            if status == 404:
                if model is None:
                    return status, None
                if model in message or "model" in message.lower():
                    raise ModelNotFound(self.name, model, f"{self.base_url} says: {message}")
            hint = f" (does {self.base_url} offer {path}?)" if status == 404 else ""
            raise BackendError(self.name, f"{what} failed: server said {status}: {message}{hint}")
        try:
            return status, reply.json()
        except ValueError:
            raise BackendError(
                self.name, f"{what} failed: unexpected reply from {self.base_url} (not JSON)"
            ) from None

    def server_version(self) -> str | None:
        """The server's version where it has a `/version` endpoint (vLLM does), else None; cached."""
        if not self._version_known:
            self._version_known = True
            try:
                status, data = self._request("asking the version", "GET", "/version")
            except BackendError:
                status, data = 0, None
            value = data.get("version") if status == 200 and isinstance(data, dict) else None
            self._version = value if isinstance(value, str) else None
        return self._version

    # -- Backend interface ----------------------------------------------------------------------------

    def _model_entries(self) -> list[dict[str, Any]] | None:
        """The server's model list, or None when it has no `/v1/models`."""
        status, data = self._request("listing models", "GET", "/v1/models")
        if status == 404:
            return None
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise BackendError(self.name, f"listing models failed: unexpected reply from {self.base_url}")
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    @staticmethod
    def _info(entry: dict[str, Any]) -> ModelInfo:
        raw_meta = entry.get("meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        found = (normalise_digest(place.get(k)) for place in (entry, meta) for k in _DIGEST_FIELDS)
        digest = next((d for d in found if d), None)
        size = entry.get("size")
        return ModelInfo(name=entry["id"], digest=digest, size=size if isinstance(size, int) else None)

    def _entry(self, model: str) -> dict[str, Any] | None:
        """The server's own record of one model: `/v1/models/{id}` where it has it, else its `/v1/models` entry.

        None when the server cannot list models; ModelNotFound when it lists them without this one."""
        if "/" not in model and "?" not in model and "#" not in model:  # an id that is one path segment
            from urllib.parse import quote

            try:
                status, data = self._request("describing the model", "GET", f"/v1/models/{quote(model, safe=':')}")
            except BackendUnavailable:
                raise
            except BackendError:  # a server without the endpoint may answer anything: the list decides
                status, data = 0, None
            if status == 200 and isinstance(data, dict) and data.get("id") == model:
                self._seen[model] = data
                return data
        entries = self._model_entries()
        if entries is None:
            return None
        for entry in entries:
            if entry["id"] == model:
                self._seen[model] = entry
                return entry
        served = ", ".join(e["id"] for e in entries[:5]) or "nothing"
        raise ModelNotFound(self.name, model, f"{self.base_url} serves {served}")

    def model_meta(self, model: str) -> dict[str, Any] | None:
        """The weights facts the server reports for the model (llama.cpp's `meta`), or None."""
        entry = self._seen.get(model) or self._entry(model)  # resolve() just fetched it, as a rule
        meta = entry.get("meta") if entry is not None else None
        if not isinstance(meta, dict):
            return None
        kept = {k: meta[k] for k in _META_FIELDS if isinstance(meta.get(k), int) and not isinstance(meta[k], bool)}
        return kept or None

    def check_digest(self, job: Job) -> ModelInfo:
        if job.model_digest:
            info = self.resolve(job.model)
            if info.digest is None:
                raise DigestMismatch(self.name, job.model, job.model_digest, None,
                                     f"{self.base_url} reports no weights digest for {job.model!r}, so the job's "
                                     f"pinned {job.model_digest} cannot be checked; refused")  # fmt: skip
        return super().check_digest(job)

    def list_models(self) -> list[ModelInfo]:
        return [self._info(e) for e in self._model_entries() or []]

    def resolve(self, model: str) -> ModelInfo:
        entry = self._entry(model)
        if entry is None:  # the server cannot list; the completion call will tell whether it has the model
            return ModelInfo(name=model, digest=None)
        return self._info(entry)

    def request_body(self, job: Job) -> dict[str, Any]:
        """The JSON sent for the job: fixed sampling, then the sampling options the job adds."""
        body: dict[str, Any] = {"model": job.model, "prompt": job.prompt, "temperature": 0, "seed": job.seed}
        if job.max_tokens > 0:
            body["max_tokens"] = job.max_tokens
        body.update(pick_options(job.options, SAMPLING_OPTIONS | _EXTRA_OPTIONS))
        body["stream"] = False
        return body

    def envelope(self, job: Job, info: ModelInfo | None = None) -> dict[str, Any]:
        info = info or self.resolve(job.model)
        sampling = {k: v for k, v in self.request_body(job).items() if k not in ("model", "prompt", "stream")}
        return {
            "backend": self.name,
            "backend_version": self.server_version(),
            "host": self.base_url,
            "model": job.model,
            "model_digest": info.digest,
            "model_meta": self.model_meta(job.model) if info.digest is None else None,
            "sampling": sampling,
            "wl_infer_version": wl_version(),
        }

    def generate(self, job: Job) -> Generation:
        info = self.check_digest(job)
        envelope = self.envelope(job, info)
        started = time.monotonic()
        _, data = self._request(
            "generation", "POST", "/v1/completions", self.request_body(job), model=job.model
        )
        elapsed = time.monotonic() - started
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            said = (
                f": {server_message(orjson.dumps(data))}"
                if isinstance(data, dict) and "error" in data
                else ""
            )
            raise BackendError(
                self.name, f"generation failed: unexpected reply from {self.base_url} (no choices){said}"
            )
        choice = choices[0]
        text = choice.get("text")
        if not isinstance(text, str):
            raise BackendError(
                self.name, f"generation failed: unexpected reply from {self.base_url} (no text)"
            )
        fingerprint = data.get("system_fingerprint")
        envelope["system_fingerprint"] = fingerprint if isinstance(fingerprint, str) else None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        return Generation(
            output=text,
            tokens=_token_ids(choice.get("token_ids")),
            envelope=envelope,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=prompt_tokens if _count(prompt_tokens) else None,
            elapsed_s=elapsed,
            completion_tokens=completion_tokens if _count(completion_tokens) else None,
        )

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def _count(value: Any) -> bool:
    """A token count a server may report: a non-negative int (never a bool), within reason."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31


def _token_ids(value: Any) -> list[int] | None:
    """Generated token ids when the server reports them (vLLM does with `return_token_ids`)."""
    if isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    ):
        return list(value)
    return None
