"""The rig's home: config, key, local clone and lock.

`--home` beats `WL_HOME` beats `$XDG_DATA_HOME/wl` beats `~/.local/share/wl`. The home is created 0700 and
the files wl writes in it 0600, whatever the umask: it holds the signing key and the board copy. config.toml
is written by tomli-w and read back before it replaces the old one, so `wl config set` can never leave a
file that no command can read.
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
from board.text import is_clean

BOARD_CONFIG_KEYS: dict[str, type] = {
    "handle": str,
    "remote": str,
    "display_name": str,
    "lease": int,
    "archive_after": int,  # days after which `wl archive` moves completed and withdrawn items (default 30)
}
CONFIG_GROUP = "wl.config"  # plugins declare their keys: an entry point naming a dict of key -> str or int


class _ConfigKeys(Mapping[str, type]):
    """The board's keys and every installed plugin's, read from the entry points on first use."""

    def _all(self) -> dict[str, type]:
        if not hasattr(self, "_keys"):
            from board.entrypoints import entry_points

            keys = dict(BOARD_CONFIG_KEYS)
            for ep in entry_points(CONFIG_GROUP):
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
HOME_MODE = 0o700
FILE_MODE = 0o600
MAX_CONFIG_VALUE = 4096


def default_home() -> Path:
    env = os.environ.get("WL_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "wl"


def _check_value(key: str, value: Any) -> None:
    """Config values are names, handles, URLs and numbers: control characters in one are a mistake or an
    attack (a display name is published on the board), and text that cannot be encoded cannot be saved."""
    if isinstance(value, str):
        if len(value) > MAX_CONFIG_VALUE:
            raise ConfigError(f"{key} is too long ({len(value)} characters; at most {MAX_CONFIG_VALUE})")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key} is not valid UTF-8 text: {value!r}") from None
        if not is_clean(value):
            raise ConfigError(f"{key} may not contain control or formatting characters: {value!r}")


def _check_types(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    # The board's own keys first; plugins' declarations are loaded only when the file holds other keys.
    keys: Mapping[str, type] = CONFIG_KEYS if any(k not in BOARD_CONFIG_KEYS for k in data) else BOARD_CONFIG_KEYS
    for key, kind in keys.items():
        v = data.get(key)
        if v is None:
            continue
        ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
        if not ok or (kind is not bool and isinstance(v, bool)):
            names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
            raise ConfigError(f"{path}: {key} must be {names.get(kind, kind.__name__)} (got {v!r})")
    return data


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

    def ensure(self) -> None:
        """Create the home 0700 (an existing folder is left as its owner set it)."""
        if self.path.is_dir():
            return
        self.path.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
        os.chmod(self.path, HOME_MODE)  # mkdir's mode is masked by the umask (umask 0o700 would leave 0000)

    def load_config(self) -> dict[str, Any]:
        try:
            raw = self.config_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.config_path}: {e}") from None
        return _check_types(self.config_path, data)

    def save_config(self, data: dict[str, Any]) -> None:
        """Write config.toml (0600) through a temporary file, only once the text reads back as `data`."""
        import tomli_w

        kept = {k: v for k, v in sorted(data.items()) if v is not None and _BARE_KEY.match(k)}
        for k, v in kept.items():
            _check_value(k, v)
        try:
            text = "# wl configuration (written by wl; edit with `wl config set KEY VALUE`)\n" + tomli_w.dumps(kept)
            round_trip = tomllib.loads(text)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"this configuration cannot be written as TOML: {e}") from None
        if round_trip != kept:
            raise ConfigError("this configuration would not read back as written; nothing was changed")
        self.ensure()
        tmp = self.config_path.with_name(f".config.toml.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), FILE_MODE)
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.config_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

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
        _check_value(key, typed)
        data = self.load_config()
        data[key] = typed
        self.save_config(data)
        return typed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise mutations from several processes sharing one home (a worker and a feeder, say)."""
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
