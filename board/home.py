"""The rig's home: config, key, local clone and lock.

`--home` beats `WL_HOME` beats `$XDG_DATA_HOME/wl` beats `~/.local/share/wl`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from board.errors import ConfigError

CONFIG_KEYS = {
    "handle": str,
    "remote": str,
    "display_name": str,
    "default_backend": str,
    "lease": int,
    "ollama_url": str,
    "openai_base_url": str,
    "rpc_url": str,
    "contract": str,
    "model": str,
    # wl_infer's per-job limits (issue 10; wl_infer/limits.py): 0 means no limit
    "limit_ctx": int,
    "limit_tokens": int,
    "limit_seconds": int,
    "limit_output_bytes": int,
    "limit_memory_mb": int,
}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")


def default_home() -> Path:
    env = os.environ.get("WL_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "wl"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


@dataclass
class Home:
    path: Path

    @property
    def repo_path(self) -> Path:
        return self.path / "board.git"

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def kept_dir(self) -> Path:
        """Operations a replay could not apply, kept whole (with any output they carried)."""
        return self.path / "kept"

    def exists(self) -> bool:
        return self.repo_path.is_dir()

    def load_config(self) -> dict[str, Any]:
        try:
            raw = self.config_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.config_path}: {e}") from None
        return data

    def save_config(self, data: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lines = ["# wl configuration (written by wl; edit with `wl config set KEY VALUE`)"]
        for k in sorted(data):
            if data[k] is None or not _BARE_KEY.match(k):
                continue
            lines.append(f"{k} = {_toml_value(data[k])}")
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.config_path)

    def set_config(self, key: str, value: str) -> Any:
        kind = CONFIG_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(CONFIG_KEYS))})")
        typed: Any = value
        if kind is int:
            try:
                typed = int(value)
            except ValueError:
                raise ConfigError(f"{key} must be an integer") from None
        data = self.load_config()
        data[key] = typed
        self.save_config(data)
        return typed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise mutations from several processes sharing one home (a worker and a feeder, say)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
