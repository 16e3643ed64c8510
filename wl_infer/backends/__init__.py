"""The backend registry: names come from the `wl_infer.backends` entry-point group (wl_infer.plugins), and a
backend's class is imported only when that backend is asked for (engines are heavy).
"""

from __future__ import annotations

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
    UnknownBackend,
)
from wl_infer.plugins import backend_entry_point, backend_names

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
    "UnknownBackend",
    "backend_class",
    "backend_names",
    "get_backend",
]

_loaded: dict[str, type[Backend]] = {}


def backend_class(name: str) -> type[Backend]:
    """The registered class for `name` (UnknownBackend names the known ones; a broken plugin is unavailable)."""
    cls = _loaded.get(name)
    if cls is not None:
        return cls
    ep = backend_entry_point(name)
    if ep is None:
        raise UnknownBackend(name, backend_names())
    try:
        loaded = ep.load()
    except ImportError as e:
        raise BackendUnavailable(name, f"its plugin could not be loaded ({e})") from None
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)) or loaded.name != name:
        raise BackendUnavailable(name, f"entry point {ep.value} is not a Backend subclass named {name!r}")
    _loaded[name] = loaded
    return loaded


def get_backend(name: str, config: BackendConfig | None = None, **kwargs: Any) -> Backend:
    """A ready backend instance; the engine itself loads on first use."""
    if config is None:
        config = BackendConfig(**kwargs)
    return backend_class(name)(config)
