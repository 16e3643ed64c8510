"""Text as wl_infer shows it: on one line, of bounded length (server replies and errors can be pages)."""

from __future__ import annotations

from typing import Any


def one_line(text: Any, limit: int | None = 200) -> str:
    """Collapse whitespace to single spaces; past `limit` characters, cut and end with `...`."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


def error_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one bounded line, its type's name when it has no message."""
    return one_line(exc, limit) or type(exc).__name__
