"""IDs, handles and times: generated and validated here, before anything touches a file."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime

from board.errors import InvalidHandle, InvalidId

ITEM_RE = re.compile(r"^w-[0-9a-f]{10}\Z")
ITEM_PREFIX_RE = re.compile(r"^(w-)?[0-9a-f]{1,10}\Z")
COMPLETION_RE = re.compile(r"^c-[0-9a-f]{16}\Z")
HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
BOARD_ID_RE = re.compile(r"^[0-9a-f]{16}\Z")
TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z\Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


def fmt_time(t: datetime) -> str:
    """UTC RFC 3339 with `Z`, to the second."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime:
    if not isinstance(s, str) or not TIME_RE.match(s):
        raise ValueError(f"not an RFC 3339 UTC time: {s!r}")
    try:  # the pattern lets through 2026-99-99T99:99:99Z; the calendar does not (fromisoformat: 250x strptime)
        return datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an RFC 3339 UTC time: {s!r}") from None


def new_item_id(title: str, at: datetime) -> str:
    """`w-` + first 10 hex of sha256 over title, time and 8 random bytes."""
    h = hashlib.sha256(title.encode() + fmt_time(at).encode() + os.urandom(8))
    return "w-" + h.hexdigest()[:10]


def new_completion_id() -> str:
    return "c-" + os.urandom(8).hex()


def new_board_id() -> str:
    return os.urandom(8).hex()


def check_item_id(value: str) -> str:
    if not isinstance(value, str) or not ITEM_RE.match(value):
        raise InvalidId(str(value))
    return value


def normalise_prefix(value: str) -> str:
    """Accept `w-abc` or `abc`; refuse anything else (path-like input never reaches storage)."""
    if not isinstance(value, str) or not ITEM_PREFIX_RE.match(value):
        raise InvalidId(str(value))
    return value if value.startswith("w-") else "w-" + value


def check_handle(value: str) -> str:
    if not isinstance(value, str) or not HANDLE_RE.match(value):
        raise InvalidHandle(str(value))
    return value
