"""The `ollama` backend: a job run on an Ollama server through the official Python client.

Raw completion (`raw=true`, no template), `stream=false`, options temperature 0, the job's seed and
`num_predict` when max_tokens > 0. The weights are pinned by the model's digest as `/api/tags` reports it.

Token ids: Ollama returns no `context` in raw mode, and outside raw mode `context` is a re-tokenisation of
prompt + response text rather than the ids that were sampled, so this backend records `tokens=None`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from wl_infer.backends._http import client_platform, normalise_digest, one_line, transport_failure, wl_version
from wl_infer.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    BackendUnavailable,
    Generation,
    ModelInfo,
    ModelNotFound,
)
from wl_infer.codec import Job

if TYPE_CHECKING:
    from wl_infer.limits import Limits

DEFAULT_HOST = "http://127.0.0.1:11434"
T = TypeVar("T")

# Ollama's option names (the client's `Options` model); used when the client does not expose them.
_OLLAMA_OPTIONS = frozenset(
    {
        "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
        "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep", "top_k",
        "top_p", "min_p", "tfs_z", "typical_p", "repeat_last_n", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "stop",
    }
)  # fmt: skip
_FIXED = frozenset({"temperature", "seed", "num_predict"})


def canonical_name(model: str) -> str:
    """Ollama's implicit tag: `llama3.2` means `llama3.2:latest` (a `host:port/` prefix is not a tag)."""
    last = model.rsplit("/", 1)[-1]
    return model if ":" in last else model + ":latest"


class OllamaBackend(Backend):
    """Runs jobs on an Ollama server; the server owns the engine, this class only speaks its API."""

    name = "ollama"
    can_score = False
    reports_digest = True

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        raw = self.config.ollama_host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self.host = base_url(raw)
        self._client: Any = None
        self._version: str | None = None
        self._version_known = False

    # -- plumbing -------------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                import ollama
            except ImportError:
                raise BackendUnavailable(
                    self.name, "the ollama client is not installed (pip install ollama)"
                ) from None
            # issue 10: the reply is capped and held to the job's deadline while it is read
            from wl_infer.bounded_http import bounded_transport

            self._client = ollama.Client(host=self.host, timeout=self.config.timeout, transport=bounded_transport(self.config))
        return self._client

    def _unreachable(self) -> BackendUnavailable:
        return BackendUnavailable(
            self.name, f"cannot reach Ollama at {self.host} (is `ollama serve` running?)"
        )

    def _call(
        self, what: str, fn: Callable[..., T], *args: Any, for_model: str | None = None, **kwargs: Any
    ) -> T:
        """Call the client and turn whatever it raises into one-line BackendErrors."""
        import httpx
        import ollama

        try:
            return fn(*args, **kwargs)
        except ollama.ResponseError as exc:
            status = exc.status_code
            message = one_line(exc.error)
            if status == 404 and for_model is not None:
                raise ModelNotFound(self.name, for_model, f"ollama pull {for_model}") from None
            if status == -1:  # an error reported inside a 200 reply
                raise BackendError(self.name, f"{what} failed: {message}") from None
            raise BackendError(self.name, f"{what} failed: server said {status}: {message}") from None
        except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout):
            raise self._unreachable() from None
        except httpx.HTTPError as exc:  # a timeout, or a connection that broke
            raise transport_failure(self.name, what, self.host, self.config.timeout, exc, "Ollama at ") from None
        except ValueError as exc:  # a reply that is not the JSON the client expects
            raise BackendError(
                self.name, f"{what} failed: unexpected reply from {self.host} ({one_line(exc, 120)})"
            ) from None

    def server_version(self) -> str | None:
        """Ollama's version from `/api/version`, or None when it cannot be asked (best effort, cached)."""
        if not self._version_known:
            import httpx

            self._version_known = True
            try:
                from wl_infer.bounded_http import bounded_transport  # issue 10: a flood here is capped too

                with httpx.Client(base_url=self.host, timeout=min(self.config.timeout, 5.0),
                                  transport=bounded_transport(self.config)) as c:
                    reply = c.get("/api/version")
                    if reply.status_code == 200:
                        value = reply.json().get("version")
                        self._version = value if isinstance(value, str) else None
            except (httpx.HTTPError, ValueError, AttributeError, BackendError):
                self._version = None
        return self._version

    # -- Backend interface ----------------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        client = self._get_client()
        reply = self._call("listing models", client.list)
        out: list[ModelInfo] = []
        for entry in reply.models:
            name = entry.model or getattr(entry, "name", None)
            if not name:
                continue
            size = int(entry.size) if entry.size is not None else None
            out.append(ModelInfo(name=name, digest=normalise_digest(entry.digest), size=size))
        return out

    def resolve(self, model: str) -> ModelInfo:
        wanted = canonical_name(model)
        for info in self.list_models():
            if canonical_name(info.name) == wanted:
                return ModelInfo(name=model, digest=info.digest, size=info.size)
        raise ModelNotFound(self.name, model, f"ollama pull {model}")

    def pull(self, model: str) -> ModelInfo:
        """`ollama pull` through the server, then the model as the server lists it (with its digest)."""
        self._call("pulling the model", self._get_client().pull, model, for_model=model)
        return self.resolve(model)

    def options(self, job: Job) -> dict[str, Any]:
        """The options sent with the job: fixed sampling first, then the job's own Ollama options."""
        sent: dict[str, Any] = {"temperature": 0, "seed": job.seed}
        if job.max_tokens > 0:
            sent["num_predict"] = job.max_tokens
        for key, value in sorted(job.options.items()):
            if key in _ollama_option_names() and key not in _FIXED:
                sent[key] = value
        return sent

    def envelope(self, job: Job, info: ModelInfo | None = None) -> dict[str, Any]:
        info = info or self.resolve(job.model)
        return {
            "backend": self.name,
            "backend_version": self.server_version(),
            "host": self.host,
            "model": job.model,
            "model_digest": info.digest,
            "raw": True,
            "stream": False,
            "options": self.options(job),
            "client_platform": client_platform(),
            "wl_infer_version": wl_version(),
        }

    def generate(self, job: Job) -> Generation:
        info = self.check_digest(job)
        client = self._get_client()
        envelope = self.envelope(job, info)
        started = time.monotonic()
        reply = self._call(
            "generation",
            client.generate,
            model=job.model,
            prompt=job.prompt,
            raw=True,
            stream=False,
            options=envelope["options"],
            for_model=job.model,
        )
        elapsed = time.monotonic() - started
        return Generation(
            output=reply.response or "",
            tokens=None,  # see the module docstring: Ollama does not report the sampled ids
            envelope=envelope,
            finish_reason="length" if reply.done_reason == "length" else "stop",
            prompt_tokens=reply.prompt_eval_count,
            elapsed_s=elapsed,
        )

    def fit(self, job: Job, limits: Limits, info: ModelInfo | None = None) -> None:
        """A job that sets num_ctx is held to the model's trained context as Ollama's /api/show reports it."""
        from wl_infer.limits import JobRefused

        wanted = job.options.get("num_ctx")
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            return
        shown = self._call("showing the model", self._get_client().show, job.model, for_model=job.model)
        meta: dict[str, Any] = getattr(shown, "modelinfo", None) or {}
        trained = next((v for k, v in meta.items() if str(k).endswith(".context_length") and isinstance(v, int)), None)
        if trained is not None and wanted > trained:
            raise JobRefused(f"options.num_ctx is larger than {job.model}'s trained context (/api/show)", trained, wanted)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def _ollama_option_names() -> frozenset[str]:
    try:
        import ollama

        return frozenset(ollama.Options.model_fields)
    except (ImportError, AttributeError):
        return _OLLAMA_OPTIONS


def base_url(host: str) -> str:
    """The URL Ollama's client derives from OLLAMA_HOST: no scheme means http and port 11434."""
    if "://" in host:
        scheme, rest = host.split("://", 1)
        default_port = "443" if scheme == "https" else "80"
    else:
        scheme, rest, default_port = "http", host, "11434"
    hostport, _, path = rest.partition("/")
    bracketed = hostport.startswith("[")
    has_port = "]:" in hostport if bracketed else ":" in hostport
    if hostport.startswith(":"):
        hostport = "127.0.0.1" + hostport
    elif not hostport:
        hostport = "127.0.0.1"
    if not has_port:
        hostport += ":" + default_port
    path = path.rstrip("/")
    return f"{scheme}://{hostport}" + (f"/{path}" if path else "")
