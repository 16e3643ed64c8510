"""The rig's home: config, key, local clone and lock.

`--home` beats `WL_HOME` beats `$XDG_DATA_HOME/wl` beats `~/.local/share/wl`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from board.errors import ConfigError

BOARD_CONFIG_KEYS: dict[str, type] = {
    "handle": str,
    "remote": str,
    "display_name": str,
    "lease": int,
}
CONFIG_GROUP = "wl.config"  # plugins declare their keys: an entry point naming a dict of key -> str or int


class _ConfigKeys(Mapping[str, type]):
    """The board's keys and every installed plugin's, read from the entry points on first use."""

    def _all(self) -> dict[str, type]:
        if not hasattr(self, "_keys"):
            from importlib.metadata import entry_points

            keys = dict(BOARD_CONFIG_KEYS)
            for ep in entry_points(group=CONFIG_GROUP):
                try:
                    declared = ep.load()
                except ImportError:
                    continue  # a broken plugin declares nothing; `wl doctor` reports it
                if isinstance(declared, dict):
                    keys.update({k: v for k, v in declared.items() if v in (str, int) and k not in keys})
            self._keys = keys
        return self._keys

    def __getitem__(self, key: str) -> type:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


CONFIG_KEYS: Mapping[str, type] = _ConfigKeys()
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
