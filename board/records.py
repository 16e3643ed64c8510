"""Board records (items, completions, rigs) and their canonical on-disk JSON.

Files are UTF-8 JSON, 2-space indented, keys sorted, newline at the end, so `git log -p` reads as an audit
trail. Decoding validates every field: JSON from the board is never trusted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from board.ids import BOARD_ID_RE, COMPLETION_RE, HANDLE_RE, ITEM_RE, parse_time

TYPES = ("feature", "bug", "design", "rfc", "docs", "inference")
STATUSES = ("open", "claimed", "in_review", "completed", "withdrawn")
EFFORTS = ("trivial", "small", "medium", "large", "epic")
SEVERITIES = ("leaf", "branch", "root")
BOARD_FORMAT = "wl-board/2"
LEGACY_FORMAT = "wl-board/1"  # before signed commits; readable, checkpointed into wl-board/2 (board/ledger.py)


class RecordError(ValueError):
    """A record failed validation; `reason` says which field and why."""


def dumps(data: dict[str, Any]) -> bytes:
    """Canonical file bytes: 2-space indent, sorted keys, trailing newline."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def loads(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise RecordError("expected a JSON object")
    return value


def _str(d: dict[str, Any], key: str, *, required: bool = True, max_len: int = 1 << 20) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise RecordError(f"{key} is required")
        return ""
    if not isinstance(v, str):
        raise RecordError(f"{key} must be a string")
    if len(v) > max_len:
        raise RecordError(f"{key} is too long")
    return v


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise RecordError(f"{key} must be a string")
    return v


def _match(value: str | None, pattern: Any, key: str) -> None:
    if value is not None and not pattern.match(value):
        raise RecordError(f"{key} has an invalid value {value[:40]!r}")


def _time(value: str | None, key: str) -> None:
    """A time must parse, not just look like one: `2026-99-99T99:99:99Z` matches the pattern."""
    if value is None:
        return
    try:
        parse_time(value)
    except ValueError:
        raise RecordError(f"{key} is not an RFC 3339 UTC time (got {value[:40]!r})") from None


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise RecordError(f"{key} must be one of {', '.join(choices)} (got {value[:40]!r})")


def _int(d: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RecordError(f"{key} must be an integer from {lo} to {hi}")
    return v


@dataclass
class Item:
    id: str
    title: str
    posted_by: str
    created_at: str
    updated_at: str
    description: str = ""
    project: str = ""
    type: str = "feature"
    priority: int = 2
    tags: list[str] = field(default_factory=list)
    claimed_by: str | None = None
    claim_expires_at: str | None = None
    status: str = "open"
    effort_level: str = "medium"
    evidence_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        """A validated item. The common well-formed record takes one quick pass; anything that pass does not
        accept is judged field by field by `checked`, which names the first field that is wrong."""
        item = _quick_item(d)
        return item if item is not None else cls.checked(d)

    @classmethod
    def checked(cls, d: dict[str, Any]) -> Item:
        item_id = _str(d, "id")
        _match(item_id, ITEM_RE, "id")
        tags = d.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 64 for t in tags):
            raise RecordError("tags must be a list of short strings")
        item = cls(
            id=item_id,
            title=_str(d, "title", max_len=1000),
            description=_str(d, "description", required=False),
            project=_str(d, "project", required=False, max_len=200),
            type=_str(d, "type", required=False) or "feature",
            priority=_int(d, "priority", 2, 0, 4),
            tags=list(tags),
            posted_by=_str(d, "posted_by"),
            claimed_by=_opt_str(d, "claimed_by"),
            claim_expires_at=_opt_str(d, "claim_expires_at"),
            status=_str(d, "status", required=False) or "open",
            effort_level=_str(d, "effort_level", required=False) or "medium",
            evidence_url=_opt_str(d, "evidence_url"),
            created_at=_str(d, "created_at"),
            updated_at=_str(d, "updated_at"),
        )
        _choice(item.type, TYPES, "type")
        _choice(item.status, STATUSES, "status")
        _choice(item.effort_level, EFFORTS, "effort_level")
        _match(item.posted_by, HANDLE_RE, "posted_by")
        _match(item.claimed_by, HANDLE_RE, "claimed_by")
        for key in ("created_at", "updated_at", "claim_expires_at"):
            _time(getattr(item, key), key)
        return item

    @classmethod
    def decode(cls, raw: bytes) -> Item:
        return cls.from_dict(loads(raw))



_ITEM_FIELDS = tuple(f.name for f in fields(Item))
_DEFAULTED = (("type", "feature"), ("status", "open"), ("effort_level", "medium"))


def _quick_item(d: dict[str, Any]) -> Item | None:
    """The item, when every field is exactly what `Item.checked` accepts; None when anything is not (then
    `checked` says what). Same rules, no error text: a cold read of 100,000 records runs this 100,000 times."""
    get = d.get
    item_id, title, posted_by = get("id"), get("title"), get("posted_by")
    created_at, updated_at = get("created_at"), get("updated_at")
    if (type(item_id) is not str or type(title) is not str or type(posted_by) is not str
            or type(created_at) is not str or type(updated_at) is not str or len(title) > 1000):
        return None
    description, project = get("description"), get("project")
    if description is None:
        description = ""
    elif type(description) is not str or len(description) > 1 << 20:
        return None
    if project is None:
        project = ""
    elif type(project) is not str or len(project) > 200:
        return None
    chosen = []
    for key, default in _DEFAULTED:
        v = get(key)
        if not v:
            if v is not None and v != "":
                return None
            v = default
        elif type(v) is not str:
            return None
        chosen.append(v)
    kind, status, effort = chosen
    if kind not in TYPES or status not in STATUSES or effort not in EFFORTS:
        return None
    optional: list[str | None] = []
    for key in ("claimed_by", "claim_expires_at", "evidence_url"):
        v = get(key)
        if v is None or v == "":
            optional.append(None)
        elif type(v) is str:
            optional.append(v)
        else:
            return None
    claimed_by, expires, evidence = optional
    priority = get("priority", 2)
    if priority is None:
        priority = 2
    elif type(priority) is not int or not 0 <= priority <= 4:
        return None
    tags = get("tags")
    if not tags:
        tags = []
    elif type(tags) is not list or not all(type(t) is str and len(t) <= 64 for t in tags):
        return None
    if (not ITEM_RE.match(item_id) or not HANDLE_RE.match(posted_by)
            or (claimed_by is not None and not HANDLE_RE.match(claimed_by))):
        return None
    try:
        for t in (created_at, updated_at, expires):
            if t is not None:
                parse_time(t)
    except ValueError:
        return None
    return Item(id=item_id, title=title, description=description, project=project, type=kind, priority=priority,
                tags=list(tags), posted_by=posted_by, claimed_by=claimed_by, claim_expires_at=expires, status=status,
                effort_level=effort, evidence_url=evidence, created_at=created_at, updated_at=updated_at)


def item_dict(item: Item) -> dict[str, Any]:
    """Item.to_dict without dataclasses.asdict's recursive deep copy (a cold read makes 100,000 of them)."""
    out = {name: getattr(item, name) for name in _ITEM_FIELDS}
    out["tags"] = list(item.tags)
    return out

@dataclass
class Completion:
    id: str
    wanted_id: str
    completed_by: str
    evidence: str
    completed_at: str
    stamp: dict[str, Any] | None = None  # set by accept: quality, reliability, severity, by, at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Completion:
        c = cls(
            id=_str(d, "id"),
            wanted_id=_str(d, "wanted_id"),
            completed_by=_str(d, "completed_by"),
            evidence=_str(d, "evidence", required=False, max_len=16 << 20),
            completed_at=_str(d, "completed_at"),
            stamp=d.get("stamp"),
        )
        _match(c.id, COMPLETION_RE, "id")
        _match(c.wanted_id, ITEM_RE, "wanted_id")
        _match(c.completed_by, HANDLE_RE, "completed_by")
        _time(c.completed_at, "completed_at")
        if c.stamp is not None and not isinstance(c.stamp, dict):
            raise RecordError("stamp must be an object")
        return c

    @classmethod
    def decode(cls, raw: bytes) -> Completion:
        return cls.from_dict(loads(raw))


@dataclass
class Rig:
    handle: str
    address: str
    registered_at: str
    display_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # fields added by plugins (e.g. a canary result)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            handle=self.handle,
            address=self.address,
            registered_at=self.registered_at,
            display_name=self.display_name,
        )
        return out

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rig:
        known = {f.name for f in fields(cls)}
        rig = cls(
            handle=_str(d, "handle"),
            address=_str(d, "address", required=False),
            registered_at=_str(d, "registered_at"),
            display_name=_str(d, "display_name", required=False, max_len=200),
            extra={k: v for k, v in d.items() if k not in known},
        )
        _match(rig.handle, HANDLE_RE, "handle")
        _time(rig.registered_at, "registered_at")
        return rig

    @classmethod
    def decode(cls, raw: bytes) -> Rig:
        return cls.from_dict(loads(raw))


def board_meta(name: str, board_id: str, created_at: str) -> dict[str, Any]:
    return {"format": BOARD_FORMAT, "name": name, "board_id": board_id, "created_at": created_at}


def check_board_meta(d: dict[str, Any]) -> dict[str, Any]:
    if d.get("format") not in (BOARD_FORMAT, LEGACY_FORMAT):
        raise RecordError(f"format must be {BOARD_FORMAT!r}")
    bid = d.get("board_id")
    if not isinstance(bid, str) or not BOARD_ID_RE.match(bid):
        raise RecordError("board_id must be 16 hex")
    return d


def pretty(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
