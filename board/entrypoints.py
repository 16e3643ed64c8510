"""Plugins' entry points (the `wl*` groups) without importing importlib.metadata and reading every installed
distribution's metadata on every start.

`importlib.metadata.entry_points()` costs tens of milliseconds a command (its import, then one file per
installed distribution). The `wl*` groups it finds are cached in the user's cache folder
(`$XDG_CACHE_HOME/wl/entry-points.json`, else `~/.cache/wl/`, 0600), keyed by the interpreter and by every
`sys.path` entry with its modification time: installing or removing a distribution adds or removes its
`*.dist-info` folder, which changes the time of the folder that holds it, and a new path entry changes the
list. A key whose newest time is less than RACY seconds old is not cached (a folder changed twice within the
clock's granularity would look unchanged); a cache that cannot be read or written only costs the scan.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from functools import reduce
from pathlib import Path
from typing import Any

import orjson

VERSION = 1
PREFIX = "wl"  # the groups cached: wl.plugins, wl.browse_columns, wl.config, wl.doctor, wl_infer.backends, …
RACY = 2.0
MAX_ENVIRONMENTS = 8  # interpreters (venvs) remembered in one cache file


class EntryPoint:
    """What importlib.metadata's EntryPoint offers the callers here: a name, a `module:attr` value, load()."""

    __slots__ = ("group", "name", "value")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name, self.value, self.group = name, value, group

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"

    def load(self) -> Any:
        module, _, attrs = self.value.partition("[")[0].strip().partition(":")
        found = importlib.import_module(module.strip())
        return reduce(getattr, filter(None, attrs.strip().split(".")), found)


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "wl" / "entry-points.json"


def _key() -> tuple[str, list[list[Any]]]:
    """(which environment, what its path looks like now)."""
    stamps: list[list[Any]] = []
    for entry in sys.path:
        try:
            stamps.append([entry, os.stat(entry or ".").st_mtime_ns])
        except (OSError, ValueError):
            stamps.append([entry, None])
    return f"{sys.executable}\0{sys.prefix}\0{sys.version}", stamps


def _scan() -> dict[str, list[list[str]]]:
    from importlib.metadata import entry_points as scan

    found = scan()
    return {group: [[ep.name, ep.value] for ep in found.select(group=group)]
            for group in sorted(found.groups) if group.startswith(PREFIX)}


def _load(path: Path, env: str, stamps: list[list[Any]]) -> tuple[dict[str, Any], dict[str, list[list[str]]] | None]:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}, None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("envs"), dict):
        return {}, None
    envs: dict[str, Any] = doc["envs"]
    mine = envs.get(env)
    if not isinstance(mine, dict) or mine.get("key") != stamps or not isinstance(mine.get("groups"), dict):
        return envs, None
    groups = mine["groups"]
    ok = all(isinstance(g, str) and isinstance(eps, list) and all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in eps)
        for g, eps in groups.items())  # fmt: skip
    return envs, groups if ok else None


def _save(path: Path, envs: dict[str, Any], env: str, stamps: list[list[Any]], groups: dict[str, Any]) -> None:
    newest = max((s for _, s in stamps if isinstance(s, int)), default=0) / 1e9
    if time.time() - newest < RACY:
        return  # a folder on the path changed just now: a change within the same clock tick would be missed
    envs = {k: v for k, v in envs.items() if k != env and isinstance(v, dict)}
    while len(envs) >= MAX_ENVIRONMENTS:
        envs.pop(next(iter(envs)))
    envs[env] = {"key": stamps, "groups": groups}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps({"version": VERSION, "envs": envs}))
        os.replace(tmp, path)
    except OSError:
        return  # only a speed-up


_groups: dict[str, list[list[str]]] | None = None


def entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of one group, in importlib.metadata's order."""
    global _groups
    if not group.startswith(PREFIX):
        from importlib.metadata import entry_points as scan

        return [EntryPoint(ep.name, ep.value, group) for ep in scan(group=group)]
    if _groups is None:
        env, stamps = _key()
        path = cache_path()
        envs, cached = _load(path, env, stamps)
        if cached is None:
            cached = _scan()
            _save(path, envs, env, stamps, cached)
        _groups = cached
    return [EntryPoint(name, value, group) for name, value in _groups.get(group, [])]


def forget() -> None:
    """Read the entry points again on the next call (after this process installed or removed a plugin)."""
    global _groups
    _groups = None
