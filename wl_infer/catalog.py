"""What each backend can run on this machine: `wl infer models` and the backend lines of `wl doctor`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wl_infer.backends import BackendError, BackendUnavailable, ModelInfo, backend_class, backend_names
from wl_infer.settings import backend_config


def _row(backend: str, info: ModelInfo | None = None, error: str | None = None, absent: bool = False) -> dict[str, Any]:
    """`absent`: the backend is not installed or its server is not running here (optional, not a failure)."""
    return {
        "backend": backend,
        "name": info.name if info else None,
        "digest": info.digest if info else None,
        "path": info.path if info else None,
        "error": error,
        "absent": absent,
    }


def list_all(home: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = backend_config(home, config, timeout=3.0)
    rows: list[dict[str, Any]] = []
    for name in backend_names():
        try:
            cls = backend_class(name)
        except BackendError as e:
            rows.append(_row(name, error=e.detail))
            continue
        reason = cls.unavailable(cfg)
        if reason is not None:
            rows.append(_row(name, error=reason, absent=True))
            continue
        try:
            found = cls(cfg).list_models()
        except ImportError as e:
            rows.append(_row(name, error=f"not usable here ({e})", absent=True))
            continue
        except BackendUnavailable as e:
            rows.append(_row(name, error=e.detail, absent=True))
            continue
        except BackendError as e:
            rows.append(_row(name, error=e.detail))
            continue
        rows.extend(_row(name, info) for info in found)
        if not found:
            rows.append(_row(name, error="no models"))
    return rows


def register(home: Path, name: str, path: str) -> ModelInfo:
    from wl_infer.backends.gguf import register_model

    return register_model(home, name, path)


def doctor_checks(home: Path) -> list[tuple[str, bool | None, str]]:
    """One line per backend: usable here, absent (None: not installed or not running), or why it fails
    (entry point `wl.doctor`)."""
    from board.api import Home

    config = Home(home).load_config()
    seen: dict[str, tuple[bool | None, str]] = {}
    for row in list_all(home, config):
        name = row["backend"]
        if row["error"]:
            seen.setdefault(name, (None if row["absent"] else False, row["error"]))
        else:
            ok, detail = seen.get(name, (True, ""))
            models = (detail + ", " if detail and ok else "") + str(row["name"])
            seen[name] = (True, models)
    return [(f"backend {n}", ok, d) for n, (ok, d) in seen.items()]
