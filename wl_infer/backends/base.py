"""The backend interface: one small class per engine.

A backend turns a job into output text, its token ids when it can, and the envelope that decides the output
bytes; a backend that can score claimed tokens in one forward pass supports prefill verification.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from wl_infer.codec import Job
from wl_infer.errors import InferError

if TYPE_CHECKING:
    from wl_infer.limits import Limits


class BackendError(InferError):
    """A backend could not do what was asked; the message is one user-facing line."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.detail = message


class BackendUnavailable(BackendError):
    """The engine is not installed or its server cannot be reached."""


class UnknownBackend(BackendError):
    """No installed package registers a backend by this name."""

    def __init__(self, backend: str, known: Sequence[str]) -> None:
        super().__init__(backend, f"unknown backend (expected one of {', '.join(known)})")
        self.known = tuple(known)


class ModelNotFound(BackendError):
    """The backend does not have the job's model."""

    def __init__(self, backend: str, model: str, hint: str = "") -> None:
        msg = f"model {model!r} is not available" + (f" ({hint})" if hint else "")
        super().__init__(backend, msg)
        self.model = model


class DigestMismatch(BackendError):
    """The local weights are not the weights the job pinned: the result would be unverifiable."""

    def __init__(self, backend: str, model: str, expected: str, actual: str | None, message: str = "") -> None:
        super().__init__(
            backend,
            message or f"model {model!r} here has digest {actual or 'unknown'}, but the job pins {expected}",
        )
        self.model = model
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class ModelInfo:
    name: str
    digest: str | None  # "sha256:<hex>" of the weights when known
    path: str | None = None
    size: int | None = None


@dataclass
class Generation:
    output: str
    tokens: list[int] | None
    envelope: dict[str, Any]
    finish_reason: str = "stop"  # "stop" (end of generation) or "length" (max_tokens reached)
    prompt_tokens: int | None = None
    elapsed_s: float = 0.0
    completion_tokens: int | None = None  # counted by a server that returns no token ids (OpenAI's usage)

    @property
    def n_tokens(self) -> int | None:
        """Tokens generated: the ids when known, else the server's count, else None (unknown)."""
        return len(self.tokens) if self.tokens is not None else self.completion_tokens


@dataclass
class ScoreResult:
    """Outcome of scoring claimed tokens in one teacher-forced pass (prefill verification)."""

    ok: bool
    n_tokens: int
    first_divergence: int | None = None  # position in the claimed output tokens
    claimed_token: int | None = None
    expected_token: int | None = None
    claimed_piece: str | None = None
    expected_piece: str | None = None
    margin: float | None = None  # logit(expected) - logit(claimed) at the divergence
    detokenizes_exactly: bool = True
    stop_consistent: bool = True
    reason: str = ""
    elapsed_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


# Progress of long work, for a command to render: (what, done, total or None). `what` is "assemble" (bytes of
# a model being assembled into the cache) or "tokens" (tokens generated so far, of at most total). Called from
# the thread doing the work, often: a renderer must be cheap and must not raise.
ProgressFn = Callable[[str, int, "int | None"], None]


@dataclass
class BackendConfig:
    """Settings a backend may need; every field has a working default."""

    home: Path | None = None  # wl home: model cache and registry live under it
    ollama_host: str | None = None  # default: $OLLAMA_HOST or http://127.0.0.1:11434
    openai_base_url: str | None = None  # default: $WL_OPENAI_BASE_URL
    openai_api_key: str | None = None  # default: $WL_OPENAI_API_KEY / $OPENAI_API_KEY
    timeout: float = 300.0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    progress: ProgressFn | None = None  # set by a command that shows progress (a TTY); backends call report()


class Backend(ABC):
    """One engine. Every fact about it is a class attribute here, so nothing else lists backends or their traits;
    a subclass registers under `name` in the `wl_infer.backends` entry-point group."""

    name: ClassVar[str] = ""
    can_score: ClassVar[bool] = False  # scores claimed tokens in one forward pass (prefill verification)
    reports_digest: ClassVar[bool] = False  # resolve() always gives the weights' digest (pinned at post time)
    # Longest claimed output for which `auto` verification tries prefill first (None: no limit). Where batched
    # logits drift from one-token decoding, inexact passes need a rerun, so long outputs are cheaper rerun.
    prefill_auto_max_tokens: ClassVar[int | None] = None
    # Job options the backend accepts (None: it passes the engine's own options through and checks them there).
    supported_options: ClassVar[frozenset[str] | None] = None
    uses_threads: ClassVar[bool] = False  # BackendConfig.threads changes how it runs (the canary varies it)
    requires: ClassVar[str | None] = None  # the module it imports; missing means "not installed here"
    install_hint: ClassVar[str] = ""  # how to install `requires`
    default_model: ClassVar[str | None] = None  # a model it runs without any download or server
    samples: ClassVar[bool] = False  # honours options.temperature > 0 verifiably (keyed sampling, wl_infer/sampling.py)
    exact_numerics: ClassVar[str | None] = None  # the batch-invariant numerics it records when its engine has them

    def __init__(self, config: BackendConfig | None = None) -> None:
        self.config = config or BackendConfig()

    def report(self, what: str, done: int, total: int | None = None) -> None:
        """Tell the command's progress display how far long work is (a no-op when nobody watches)."""
        if self.config.progress is not None:
            self.config.progress(what, done, total)

    @classmethod
    def unavailable(cls, config: BackendConfig) -> str | None:
        """Why this backend cannot run here, known without starting it (None: worth asking it)."""
        if cls.requires is not None and importlib.util.find_spec(cls.requires) is None:
            return cls.install_hint or f"{cls.requires} is not installed"
        return None

    @classmethod
    def known_digest(cls, model: str) -> str | None:
        """The weights digest of a model this backend ships with, known without looking for its file."""
        return None

    @abstractmethod
    def resolve(self, model: str) -> ModelInfo:
        """Find the model here (raises ModelNotFound / BackendUnavailable)."""

    def check_digest(self, job: Job) -> ModelInfo:
        """Resolve the job's model and refuse weights that differ from the pinned digest."""
        from wl_infer.limits import check_model_name  # issue 10: a job names a model, never a path

        check_model_name(self.name, job.model)
        info = self.resolve(job.model)
        if job.model_digest and info.digest != job.model_digest:
            raise DigestMismatch(self.name, job.model, job.model_digest, info.digest)
        return info

    def pull(self, model: str) -> ModelInfo:
        """Fetch or assemble the model so that jobs naming it run without waiting (`wl infer models --pull`)."""
        raise BackendError(self.name, f"cannot fetch models; {model!r} must be installed by hand")

    def fit(self, job: Job, limits: Limits, info: ModelInfo | None = None) -> None:
        """Refuse (JobRefused) a job that cannot fit this worker, from the model's own facts; before any work."""
        return None  # a backend that knows nothing of its models' limits takes every job the job checks allow

    @abstractmethod
    def generate(self, job: Job) -> Generation:
        """Run the job: output text, token ids when known, and the envelope that decides the output bytes."""

    @abstractmethod
    def envelope(self, job: Job) -> dict[str, Any]:
        """The envelope a run of this job here would carry (verify compares it with the worker's)."""

    def score(self, job: Job, tokens: list[int], output: str) -> ScoreResult:
        raise BackendError(self.name, "this backend cannot score claimed tokens (prefill)")

    def list_models(self) -> list[ModelInfo]:
        return []

    def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing to release
        """Release the engine (models stay loaded until this is called)."""


# Fields of an envelope that do not decide the output bytes (timing, host names, versions of wl itself, and
# the client machine of a server-backed backend, where the server generates).
NON_DECIDING_FIELDS = frozenset(
    {"wl_infer_version", "elapsed_s", "tokens_per_s", "host", "started_at", "client_platform"}
)


def envelope_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of output-deciding envelope fields whose values differ (flattened with dots)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    fa, fb = flat(a), flat(b)
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if k.split(".")[-1] not in NON_DECIDING_FIELDS and fa.get(k) != fb.get(k)]
