"""Where wl_infer's plugins are found: the one place that reads the `wl_infer.backends` entry-point group.

The built-in backends register through the same group as any third-party package (see pyproject.toml), so a
backend installed with pip can be posted, run and verified without a change here. Only names are read at
first; a backend's module is imported when that backend is asked for.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import EntryPoint, entry_points

BACKENDS_GROUP = "wl_infer.backends"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


@functools.cache
def _backend_entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=BACKENDS_GROUP):
        if NAME_RE.match(ep.name):
            found.setdefault(ep.name, ep)  # the first distribution to claim a name keeps it
    return found


def backend_names() -> tuple[str, ...]:
    """Every registered backend name, sorted."""
    return tuple(sorted(_backend_entry_points()))


def backend_entry_point(name: str) -> EntryPoint | None:
    return _backend_entry_points().get(name)


def forget() -> None:
    """Read the entry points again on next use (after installing a package into this process's environment)."""
    _backend_entry_points.cache_clear()
