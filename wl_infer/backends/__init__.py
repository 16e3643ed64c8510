"""Backend registry: names map to classes imported only when asked for (engines are heavy)."""

from __future__ import annotations

import importlib
from typing import Any

from wl_infer.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    Generation,
    ModelInfo,
    ModelNotFound,
    ScoreResult,
)

_BUILTIN: dict[str, str] = {
    "llama-cpp": "wl_infer.backends.llama_cpp:LlamaCppBackend",
    "ollama": "wl_infer.backends.ollama:OllamaBackend",
    "openai": "wl_infer.backends.openai:OpenAIBackend",
    "vllm": "wl_infer.backends.vllm:VLLMBackend",
}

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "DigestMismatch",
    "Generation",
    "ModelInfo",
    "ModelNotFound",
    "ScoreResult",
    "backend_class",
    "get_backend",
    "BACKEND_NAMES",
]

BACKEND_NAMES = tuple(_BUILTIN)


def backend_class(name: str) -> type[Backend]:
    target = _BUILTIN.get(name)
    if target is None:
        raise BackendError(name, f"unknown backend (expected one of {', '.join(BACKEND_NAMES)})")
    module_name, attr = target.split(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), attr)
    return cls


def get_backend(name: str, config: BackendConfig | None = None, **kwargs: Any) -> Backend:
    """A ready backend instance; the engine itself loads on first use."""
    if config is None:
        config = BackendConfig(**kwargs)
    return backend_class(name)(config)
