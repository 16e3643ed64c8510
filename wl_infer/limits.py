"""What one job may cost a worker: the operator's limits, the typed refusal, and the per-job bounds.

A job is written by anyone, so every figure in it that decides work or memory (context, tokens, time, output
size) is held to limits the operator sets — flags beat `wl config` keys beat the defaults here. Checks that need
only the job run before the claim; `JobBounds` carries the wall-clock deadline and the cancel flag of the running
job to the places that loop (llama.cpp's decode loop, the HTTP body reader), which call `checkpoint()`.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wl_infer.backends.base import BackendError
from wl_infer.limit_keys import (  # re-exported: the figures the checks below hold jobs to
    CONFIG_KEYS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_CTX,
    DEFAULT_MAX_MEMORY_MB,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_TOKENS,
    JSON_ESCAPE_FACTOR,
    REPLY_OVERHEAD,
)


class JobRefused(BackendError):
    """A job asks for more than this worker allows; one line naming the limit and the job's value."""

    verb = "refused"

    def __init__(self, reason: str, limit: Any = None, value: Any = None, *, backend: str = "limits") -> None:
        detail = f"job {self.verb}: {reason}"
        if limit is not None:
            detail += f" (limit {_show(limit)}" + (f", job {_show(value)}" if value is not None else "") + ")"
        super().__init__(backend, detail)
        self.reason, self.limit, self.value = reason, limit, value


class JobStopped(JobRefused):
    """A running job was stopped at a limit (deadline, output size) or because the run was interrupted."""

    verb = "stopped"


class Cancelled(JobStopped):
    """The run was interrupted (SIGINT/SIGTERM): the generation is abandoned."""

    def __init__(self) -> None:
        super().__init__("interrupted")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g} s"
    return str(value)


@dataclass(frozen=True)
class Limits:
    """The largest job this worker takes; None for a field means no limit."""

    max_ctx: int | None = DEFAULT_MAX_CTX
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    deadline_s: float | None = DEFAULT_DEADLINE_S
    max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES
    max_memory_mb: int | None = DEFAULT_MAX_MEMORY_MB

    def reply_cap(self) -> int | None:
        """The most bytes read from a server's reply body: the output cap, JSON-escaped, plus the envelope."""
        if self.max_output_bytes is None:
            return None
        return self.max_output_bytes * JSON_ESCAPE_FACTOR + REPLY_OVERHEAD


def limit_argv(flags: dict[str, Any]) -> list[str]:
    """The `--limit-*` arguments that pass the given flags on (the feeder's child runs)."""
    out: list[str] = []
    for key in CONFIG_KEYS:
        if flags.get(key) is not None:
            out += [f"--{key.replace('_', '-')}", f"{flags[key]:g}" if isinstance(flags[key], float) else str(flags[key])]
    return out


def resolve_limits(config: dict[str, Any], **flags: Any) -> Limits:
    """Flags (`limit_ctx=…`) beat config keys beat defaults; 0 (or a negative value) means no limit."""
    values: dict[str, Any] = {}
    for key, (attr, kind) in CONFIG_KEYS.items():
        raw = flags.get(key)
        if raw is None:
            raw = config.get(key)
        if raw is None:
            continue
        try:
            number = kind(raw)
        except (TypeError, ValueError):
            from board.api import ConfigError

            raise ConfigError(f"config key {key} must be a number, not {raw!r}") from None
        values[attr] = number if number > 0 else None
    return Limits(**values)


def limits_of(config: Any) -> Limits:
    """The limits a BackendConfig carries (defaults when it carries none)."""
    found = getattr(config, "extra", {}).get("limits")
    return found if isinstance(found, Limits) else Limits()


# --- checks on the job alone (before the claim) --------------------------------------------------------------
_PATHLIKE = re.compile(r"^(?:/|~|\.\.?(?:/|\\|\Z))|\\|(?:^|/)\.\.(?:/|\Z)|\x00")


def check_model_name(backend: str, model: str) -> None:
    """A job names a model by a registered name or tag, never a file on the worker's disk.

    llama-cpp loads local files, so any path separator or a `.gguf` name is refused there; server backends
    accept namespaced names (`org/model`, Ollama's `user/model:tag`) but never absolute or relative paths."""
    local = backend == "llama-cpp"
    if _PATHLIKE.search(model) or (local and ("/" in model or model.lower().endswith(".gguf"))):
        raise JobRefused(f"model {model!r} is a path; jobs must name a registered model or tag")


def job_n_ctx(job: Any, default: int) -> int | None:
    value = job.options.get("n_ctx", default)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_job(job: Any, limits: Limits) -> None:
    """Everything the job alone decides: its model is a name, its context and token budget fit this worker."""
    check_model_name(job.backend, job.model)
    n_ctx = job_n_ctx(job, 0) if job.backend == "llama-cpp" else job.options.get("num_ctx")
    if limits.max_ctx is not None and isinstance(n_ctx, int) and n_ctx > limits.max_ctx:
        raise JobRefused("its context is larger than this worker allows", limits.max_ctx, n_ctx)
    if limits.max_tokens is not None and job.max_tokens > limits.max_tokens:
        raise JobRefused("max_tokens is larger than this worker allows", limits.max_tokens, job.max_tokens)


def job_refusal(job: Any, limits: Limits) -> str | None:
    """Why this worker refuses the job on its own terms (None: it may claim it)."""
    try:
        check_job(job, limits)
    except JobRefused as e:
        return str(e)
    return None


# --- bounds of the running job ---------------------------------------------------------------------------------
class JobBounds:
    """The running job's deadline and cancel flag, seen by `checkpoint()` in the thread that runs it."""

    def __init__(self, limits: Limits, cancel: threading.Event | None = None) -> None:
        self.limits = limits
        self.cancel = cancel or threading.Event()
        self.started = time.monotonic()
        self.deadline = None if limits.deadline_s is None else self.started + limits.deadline_s

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobStopped("it ran past its wall-clock deadline", self.limits.deadline_s)


_current: contextvars.ContextVar[JobBounds | None] = contextvars.ContextVar("wl_job_bounds", default=None)


@contextlib.contextmanager
def bounded(limits: Limits, cancel: threading.Event | None = None) -> Iterator[JobBounds]:
    """Run the body as one bounded job: checkpoints inside it stop it at the deadline or on cancel."""
    bounds = JobBounds(limits, cancel)
    token = _current.set(bounds)
    try:
        yield bounds
    finally:
        _current.reset(token)


def current() -> JobBounds | None:
    return _current.get()


def checkpoint() -> None:
    """Called where a job loops (each decoded token, each chunk read): stop at the deadline or when cancelled."""
    bounds = _current.get()
    if bounds is not None:
        bounds.check()
