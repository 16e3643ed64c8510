"""Columns plugins add to `wl browse` (entry point group ``wl.browse_columns``).

An entry point named NAME loads a callable that takes the items about to be listed and returns a mapping
from item id to a short text; `wl browse` shows it as a column headed NAME (upper-cased) when any listed
item has a value, and under ``columns.NAME`` in --json. A column reads only what the items carry (no
network, no chain): browse must stay fast and offline. A column that fails is a warning, never the listing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

GROUP = "wl.browse_columns"
MAX_CELL = 40  # a participant's text stays one short cell


def plugin_columns(items: Sequence[Any], warn: Callable[[str], None]) -> dict[str, dict[str, str]]:
    """``{column name: {item id: text}}`` for the columns that have something to say about ``items``."""
    from board.entrypoints import entry_points

    out: dict[str, dict[str, str]] = {}
    if not items:
        return out
    ids = {i.id for i in items}
    for ep in sorted(entry_points(GROUP), key=lambda e: e.name):
        try:
            values: Mapping[str, Any] = ep.load()(list(items))
            column = {k: str(v)[:MAX_CELL] for k, v in values.items() if k in ids and v}
        except Exception as e:  # noqa: BLE001 - a broken plugin column is reported, the listing goes on
            warn(f"browse column {ep.name} failed: {type(e).__name__}: {e}")
            continue
        if column:
            out[ep.name] = column
    return out
