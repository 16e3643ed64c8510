"""Small helpers shared by the server-backed backends (ollama, openai) and vllm.

Kept free of engine imports so that importing a backend module stays cheap; httpx is imported by callers,
inside their methods.
"""

from __future__ import annotations

import platform
import re
from typing import Any

from wl_infer import __version__
from wl_infer.backends.base import BackendError
from wl_infer.text import error_line, one_line

__all__ = ["one_line"]  # re-exported for the backends

_HEX64 = re.compile(r"^(?:sha256[:-])?([0-9a-fA-F]{64})\Z")

# Sampling options a job may add through `options` for the OpenAI-compatible API and vLLM. Temperature,
# seed and max_tokens are never taken from here: they come from the job's own fields.
SAMPLING_OPTIONS = frozenset(
    {
        "top_p",
        "top_k",
        "min_p",
        "stop",
        "stop_token_ids",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "ignore_eos",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
    }
)
FIXED_SAMPLING = frozenset({"temperature", "seed", "max_tokens", "num_predict"})


def wl_version() -> str:
    return __version__


def client_platform() -> str:
    """`os/arch` of this machine, e.g. `linux/x86_64`."""
    return f"{platform.system().lower() or 'unknown'}/{platform.machine() or 'unknown'}"


def normalise_digest(value: Any) -> str | None:
    """`sha256:<lowercase hex>` from the spellings servers use (`<hex>`, `sha256:<hex>`, `sha256-<hex>`)."""
    if not isinstance(value, str):
        return None
    match = _HEX64.match(value.strip())
    return "sha256:" + match.group(1).lower() if match else None


def server_message(body: bytes | str) -> str:
    """The human part of an error body: `{"error": "..."}`, `{"error": {"message": ...}}`, `detail`, or text."""
    import json

    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return one_line(text) or "(empty reply)"
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("msg") or value
            if value:
                return one_line(value)
    return one_line(text) or "(empty reply)"


def pick_options(options: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The job options this engine understands, without the fields the job itself fixes."""
    return {k: v for k, v in sorted(options.items()) if k in allowed and k not in FIXED_SAMPLING}


def transport_failure(backend: str, what: str, host: str, timeout: float, exc: BaseException, label: str = "") -> BackendError:
    """The one-line error for an HTTP request that timed out or whose connection broke while doing `what`."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return BackendError(backend, f"{what} timed out after {timeout:g} s ({label}{host})")
    return BackendError(backend, f"{what} failed: connection to {host} broke ({error_line(exc)})")
