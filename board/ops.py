"""Operations and the lifecycle rules that apply them.

An operation is a small JSON record (it travels in each commit's `Wl-Op` trailer, so history can be
replayed). `apply` checks its precondition against a read-only view of the board and returns the file changes;
it knows nothing of git, so a replay re-checks every rule against the fresh remote state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from board import layout
from board.errors import (
    AlreadyApplied,
    AlreadyClaimed,
    BoardError,
    HandleTaken,
    NotAllowed,
    NotFound,
    NotRegistered,
    RuleError,
    UsageError,
    WrongStatus,
)
from board.ids import check_handle, check_item_id, fmt_time, parse_time
from board.records import EFFORTS, SEVERITIES, TYPES, Completion, Item, RecordError, Rig, dumps

DEFAULT_LEASE = 30 * 60
MAX_ITEM_BYTES = 2 << 20  # what readers take (board/view.py MAX_RECORD_BYTES["item"])
TRAILER = "Wl-Op: "
# Operations the ledger applies itself (board/ledger.py): they restore or re-publish state, not lifecycle.
LEDGER_OPS = ("repair", "republish", "checkpoint")


@dataclass
class Op:
    op: str
    by: str
    at: str
    id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)  # files carried in the commit, not the trailer

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op, "by": self.by, "at": self.at}
        if self.id is not None:
            d["id"] = self.id
        d["args"] = self.args
        if self.attachments:
            d["attachments"] = self.attachments
        return d

    def encode(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        op, by, at = d.get("op"), d.get("by"), d.get("at")
        if not isinstance(op, str) or op not in (*RULES, *LEDGER_OPS) or not isinstance(by, str) \
                or not isinstance(at, str):
            raise ValueError("not a wl operation")
        item_id = d.get("id")
        if item_id is not None:
            check_item_id(item_id)
        args = d.get("args") or {}
        attachments = d.get("attachments") or []
        if not isinstance(args, dict) or not isinstance(attachments, list):
            raise ValueError("malformed wl operation")
        for path in attachments:
            if not isinstance(path, str) or not path.startswith("blobs/sha256/"):
                raise ValueError("malformed attachment path")
            layout.blob_path(path.rsplit("/", 1)[-1])
        return cls(op=op, by=check_handle(by), at=at, id=item_id, args=args, attachments=attachments)

    def message(self) -> str:
        target = f" {self.id}" if self.id else ""
        return f"wl: {self.op}{target} by {self.by}\n\n{TRAILER}{self.encode()}\n"


def op_from_message(message: str) -> Op | None:
    """The operation recorded in a commit message, or None when the commit carries none."""
    # Split on "\n" only: the compact JSON may hold U+0085, U+2028 or U+2029 raw, which splitlines() breaks.
    for line in reversed(message.split("\n")):
        if line.startswith(TRAILER):
            try:
                return Op.from_dict(orjson.loads(line[len(TRAILER) :]))
            except (ValueError, orjson.JSONDecodeError, BoardError):  # a bad id or handle is no operation
                return None
    return None


class View(Protocol):
    """Read-only access to one state of the board."""

    def item(self, item_id: str) -> Item | None: ...
    def completion(self, item_id: str) -> Completion | None: ...
    def rig(self, handle: str) -> Rig | None: ...
    def read(self, path: str) -> bytes | None: ...


@dataclass
class Applied:
    changes: dict[str, bytes | None]
    result: dict[str, Any]


def _item(view: View, op: Op) -> Item:
    if op.id is None:
        raise UsageError(f"{op.op} needs an item id")
    item = view.item(op.id)
    if item is None:
        raise NotFound(op.id)
    return item


def _registered(view: View, handle: str) -> Rig:
    rig = view.rig(handle)
    if rig is None:
        raise NotRegistered(handle)
    return rig


def lease_expired(item: Item, now: datetime) -> bool:
    if item.status != "claimed" or not item.claim_expires_at:
        return False
    return parse_time(item.claim_expires_at) <= now


_ITEM_FIELDS = tuple(f.name for f in dataclass_fields(Item))


def _item_dict(item: Item) -> dict[str, Any]:
    """What Item.to_dict gives, without dataclasses.asdict's recursive copy (every validated commit pays it)."""
    out = {name: getattr(item, name) for name in _ITEM_FIELDS}
    out["tags"] = list(item.tags)
    return out


def _save(item: Item, now: datetime, **changes: Any) -> dict[str, bytes | None]:
    for k, v in changes.items():
        setattr(item, k, v)
    item.updated_at = fmt_time(now)
    return {layout.item_path(item.id): dumps(_item_dict(item))}


def _lease(op: Op) -> int:
    lease = op.args.get("lease_seconds", DEFAULT_LEASE)
    if isinstance(lease, bool) or not isinstance(lease, int) or not 1 <= lease <= 30 * 86400:
        raise UsageError("lease must be between 1 second and 30 days")
    return lease


def _post(view: View, op: Op, now: datetime) -> Applied:
    _registered(view, op.by)
    a = op.args
    if op.id is None:
        raise UsageError("post needs an id")
    existing = view.item(op.id)
    if existing is not None:
        if existing.posted_by == op.by and existing.title == a.get("title"):
            raise AlreadyApplied(f"wanted item {op.id} is already posted")
        raise RuleError(f"wanted item {op.id} already exists")
    title = a.get("title")
    if not isinstance(title, str) or not title.strip():
        raise UsageError("a title is required")
    item_type = a.get("type", "feature")
    if item_type not in TYPES:
        raise UsageError(f"type must be one of {', '.join(TYPES)}")
    effort = a.get("effort_level", "medium")
    if effort not in EFFORTS:
        raise UsageError(f"effort must be one of {', '.join(EFFORTS)}")
    priority = a.get("priority", 2)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 4:
        raise UsageError("priority must be from 0 to 4")
    t = fmt_time(now)
    item = Item(
        id=op.id,
        title=title,
        description=str(a.get("description", "")),
        project=str(a.get("project", "")),
        type=item_type,
        priority=priority,
        tags=[str(x) for x in a.get("tags", [])],
        posted_by=op.by,
        created_at=t,
        updated_at=t,
        effort_level=effort,
    )
    try:
        Item.from_dict(_item_dict(item))  # the same validation a reader applies
    except RecordError as e:
        raise UsageError(f"the item is not a valid record: {e}") from None
    record = dumps(_item_dict(item))
    if len(record) > MAX_ITEM_BYTES:
        raise UsageError(f"the item would be {len(record)} bytes; readers take items up to {MAX_ITEM_BYTES} bytes")
    return Applied({layout.item_path(item.id): record}, _item_dict(item))


def _claim(view: View, op: Op, now: datetime) -> Applied:
    _registered(view, op.by)
    item = _item(view, op)
    lease = _lease(op)
    if item.status == "claimed" and not lease_expired(item, now):
        if item.claimed_by == op.by:
            raise AlreadyApplied(f"wanted item {item.id} is already claimed by you")
        raise AlreadyClaimed(item.id, item.claimed_by or "?", item.claim_expires_at)
    if item.status not in ("open", "claimed"):
        raise WrongStatus(item.id, item.status, "open")
    previous = item.claimed_by if item.status == "claimed" else None
    expires = fmt_time(now + timedelta(seconds=lease))
    changes = _save(item, now, status="claimed", claimed_by=op.by, claim_expires_at=expires)
    return Applied(changes, {**_item_dict(item), "took_over_from": previous})


def _renew(view: View, op: Op, now: datetime) -> Applied:
    item = _item(view, op)
    if item.status != "claimed":
        raise WrongStatus(item.id, item.status, "claimed")
    if item.claimed_by != op.by:
        raise NotAllowed(item.id, op.by, "renew the claim on", f"the claimer ({item.claimed_by})")
    expires = fmt_time(now + timedelta(seconds=_lease(op)))
    return Applied(_save(item, now, claim_expires_at=expires), _item_dict(item))


def _unclaim(view: View, op: Op, now: datetime) -> Applied:
    item = _item(view, op)
    if item.status != "claimed":
        if item.status == "open" and op.args.get("expected_claimer") is not None:
            raise AlreadyApplied(f"wanted item {item.id} is already open")
        raise WrongStatus(item.id, item.status, "claimed")
    expected = op.args.get("expected_claimer")
    if expected is not None and item.claimed_by != expected:
        raise RuleError(f"wanted item {item.id} is now claimed by {item.claimed_by}, not {expected}")
    if op.by not in (item.claimed_by, item.posted_by) and not lease_expired(item, now):
        raise NotAllowed(item.id, op.by, "unclaim", "the claimer, the poster, or anyone once the lease expired")
    changes = _save(item, now, status="open", claimed_by=None, claim_expires_at=None)
    return Applied(changes, _item_dict(item))


def _done(view: View, op: Op, now: datetime) -> Applied:
    item = _item(view, op)
    if op.args.get("lane") is not None and not (item.status == "claimed" and item.claimed_by == op.by):
        from board.lanes import take_lane_claim

        take_lane_claim(view, op, item, now)
    if item.status != "claimed":
        raise WrongStatus(item.id, item.status, "claimed")
    if item.claimed_by != op.by:
        raise NotAllowed(item.id, op.by, "complete", f"the claimer ({item.claimed_by})")
    evidence = op.args.get("evidence")
    cid = op.args.get("completion_id")
    if not isinstance(evidence, str) or not isinstance(cid, str):
        raise UsageError("done needs evidence")
    comp = Completion(id=cid, wanted_id=item.id, completed_by=op.by, evidence=evidence, completed_at=fmt_time(now))
    Completion.from_dict(comp.to_dict())
    changes = _save(item, now, status="in_review", evidence_url=evidence, claim_expires_at=None)
    changes[layout.completion_path(item.id)] = comp.encode()
    return Applied(changes, {"item": _item_dict(item), "completion": comp.to_dict()})


def _poster_review(view: View, op: Op, verb: str) -> tuple[Item, Completion | None]:
    item = _item(view, op)
    if item.status != "in_review":
        raise WrongStatus(item.id, item.status, "in_review")
    if op.by != item.posted_by:
        raise NotAllowed(item.id, op.by, verb, f"the poster ({item.posted_by})")
    return item, view.completion(item.id)


def _rating(op: Op, key: str, default: int | None) -> int:
    v = op.args.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
        raise UsageError(f"{key} must be from 1 to 5")
    return v


def _accept(view: View, op: Op, now: datetime) -> Applied:
    item, comp = _poster_review(view, op, "accept")
    if op.by == item.claimed_by or (comp is not None and comp.completed_by == op.by):
        raise NotAllowed(item.id, op.by, "accept", "the poster, never the claimer,")
    quality = _rating(op, "quality", None)
    reliability = _rating(op, "reliability", quality)
    severity = op.args.get("severity", "leaf")
    if severity not in SEVERITIES:
        raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}")
    changes = _save(item, now, status="completed")
    if comp is not None:
        comp.stamp = {
            "by": op.by,
            "at": fmt_time(now),
            "quality": quality,
            "reliability": reliability,
            "severity": severity,
        }
        changes[layout.completion_path(item.id)] = comp.encode()
    return Applied(changes, _item_dict(item))


def _reject(view: View, op: Op, now: datetime) -> Applied:
    item, _ = _poster_review(view, op, "reject")
    expires = fmt_time(now + timedelta(seconds=DEFAULT_LEASE))
    changes = _save(item, now, status="claimed", evidence_url=None, claim_expires_at=expires)
    changes[layout.completion_path(item.id)] = None
    changes[layout.completion_flat_path(item.id)] = None
    return Applied(changes, _item_dict(item))


def _close(view: View, op: Op, now: datetime) -> Applied:
    item, _ = _poster_review(view, op, "close")
    return Applied(_save(item, now, status="completed"), _item_dict(item))


def _delete(view: View, op: Op, now: datetime) -> Applied:
    item = _item(view, op)
    if item.status != "open":
        raise WrongStatus(item.id, item.status, "open")
    if op.by != item.posted_by:
        raise NotAllowed(item.id, op.by, "delete", f"the poster ({item.posted_by})")
    return Applied(_save(item, now, status="withdrawn"), _item_dict(item))


def _join(view: View, op: Op, now: datetime) -> Applied:
    address = op.args.get("address", "")
    if not isinstance(address, str):
        raise UsageError("address must be a string")
    existing = view.rig(op.by)
    if existing is not None:
        if existing.address.lower() == address.lower():
            raise AlreadyApplied(f"rig {op.by} is already registered")
        raise HandleTaken(op.by, existing.address)
    rig = Rig(
        handle=op.by,
        address=address,
        registered_at=fmt_time(now),
        display_name=str(op.args.get("display_name", op.by))[:200],
    )
    return Applied({layout.rig_path(op.by): rig.encode()}, rig.to_dict())


def _rig_update(view: View, op: Op, now: datetime) -> Applied:
    rig = _registered(view, op.by)
    fields = op.args.get("fields")
    if not isinstance(fields, dict) or any(k in ("handle", "address", "registered_at") for k in fields):
        raise UsageError("rig update takes plugin fields only (the address changes by key rotation)")
    rig.extra.update(fields)
    return Applied({layout.rig_path(op.by): rig.encode()}, rig.to_dict())


def _rotate_key(view: View, op: Op, now: datetime) -> Applied:
    rig = _registered(view, op.by)
    old, new = op.args.get("old_address"), op.args.get("new_address")
    if not isinstance(new, str) or not isinstance(old, str):
        raise UsageError("key rotation needs old_address and new_address")
    if rig.address.lower() == new.lower():
        raise AlreadyApplied(f"rig {op.by} already uses {new}")
    if rig.address.lower() != old.lower():
        raise RuleError(f"rig {op.by} is registered with {rig.address}, not {old}")
    _check_rotation_proof(view, op.by, old, new, op.args.get("proof"))
    history = list(rig.extra.get("previous_addresses", []))
    history.append({"address": rig.address, "until": fmt_time(now), "proof": op.args.get("proof")})
    rig.extra["previous_addresses"] = history
    rig.address = new
    return Applied({layout.rig_path(op.by): rig.encode()}, rig.to_dict())


def _check_rotation_proof(view: View, handle: str, old: str, new: str, proof: Any) -> None:
    """A key hands over only by signing its successor: nobody else can move a rig to their own key."""
    from board.keys import rotation_message, rotation_signer
    from board.records import loads

    raw = view.read(layout.BOARD)
    board_id = str(loads(raw).get("board_id", "")) if raw else ""
    signer = rotation_signer(rotation_message(board_id, handle, old, new), proof)
    if signer is None or signer.lower() != old.lower():
        raise RuleError(f"key rotation for {handle} is not signed by its current key {old}")


def _attest(view: View, op: Op, now: datetime) -> Applied:
    _registered(view, op.by)
    item = _item(view, op)
    record = op.args.get("record")
    if not isinstance(record, dict):
        raise UsageError("attestation record must be an object")
    if view.completion(item.id) is None:
        raise WrongStatus(item.id, item.status, ("in_review", "completed"), "there is no completion to attest")
    return Applied({layout.attestation_path(item.id, op.by): dumps(record)}, record)


def _chain(view: View, op: Op, now: datetime) -> Applied:
    _registered(view, op.by)
    record = op.args.get("record")
    if not isinstance(record, dict):
        raise UsageError("chain record must be an object")
    current = view.read(layout.CHAIN)
    if current is not None and not op.args.get("replace"):
        if orjson.loads(current) == record:
            raise AlreadyApplied("chain.json already records this deployment")
        raise RuleError("this board already anchors on a chain (chain.json exists)")
    return Applied({layout.CHAIN: dumps(record)}, record)


def _anchor(view: View, op: Op, now: datetime) -> Applied:
    """Record where the completer published its result (e.g. a chain transaction) inside its JSON evidence.

    Generic on purpose: the board stores ``args.anchor`` under the evidence's ``"anchor"`` key and knows
    nothing of chains; only the completer may, and only while its completion is live.
    """
    item = _item(view, op)
    if item.status not in ("in_review", "completed"):
        raise WrongStatus(item.id, item.status, ("in_review", "completed"))
    comp = view.completion(item.id)
    if comp is None:
        raise WrongStatus(item.id, item.status, ("in_review", "completed"), "there is no completion")
    if comp.completed_by != op.by:
        raise NotAllowed(item.id, op.by, "record anchor details on", f"the completer ({comp.completed_by})")
    expected = op.args.get("completion_id")
    if expected is not None and expected != comp.id:
        raise RuleError(f"wanted item {item.id} has completion {comp.id} now, not {expected}")
    details = op.args.get("anchor")
    if not isinstance(details, dict):
        raise UsageError("anchor details must be an object")
    try:
        evidence = orjson.loads(comp.evidence)
    except orjson.JSONDecodeError:
        evidence = None
    if not isinstance(evidence, dict):
        raise RuleError(
            f"the evidence of wanted item {item.id} is not a JSON object, so it cannot carry anchor details"
        )
    if evidence.get("anchor") == details:
        raise AlreadyApplied(f"the completion of wanted item {item.id} already records these anchor details")
    evidence["anchor"] = details
    comp.evidence = orjson.dumps(evidence).decode()
    Completion.from_dict(comp.to_dict())
    path = layout.completion_path(item.id)
    if view.read(path) is None and view.read(layout.completion_flat_path(item.id)) is not None:
        path = layout.completion_flat_path(item.id)
    changes = _save(item, now, evidence_url=comp.evidence)
    changes[path] = comp.encode()
    return Applied(changes, {"item": _item_dict(item), "completion": comp.to_dict()})


RULES: dict[str, Callable[[View, Op, datetime], Applied]] = {
    "post": _post,
    "claim": _claim,
    "renew": _renew,
    "unclaim": _unclaim,
    "done": _done,
    "accept": _accept,
    "reject": _reject,
    "close": _close,
    "delete": _delete,
    "join": _join,
    "rig-update": _rig_update,
    "rotate-key": _rotate_key,
    "attest": _attest,
    "chain": _chain,
    "anchor": _anchor,
}


def apply(view: View, op: Op, now: datetime) -> Applied:
    """Check the operation's precondition on this state and return the file changes it makes."""
    rule = RULES.get(op.op)
    if rule is None:
        raise RuleError(f"{op.op} is applied by the ledger, not by the lifecycle rules")
    return rule(view, op, now)



def _archive(view: View, op: Op, now: datetime) -> Applied:
    """Housekeeping anyone registered may do: finished items older than an age leave the live tree."""
    from board.archive import archive_changes

    _registered(view, op.by)
    return Applied(*archive_changes(view, op.id, op.args, op.at, now))


RULES["archive"] = _archive


def _fold(view: View, op: Op, now: datetime) -> Applied:
    """Results pushed on their lanes, carried into main (board/folds.py)."""
    from board.folds import fold_rule

    return fold_rule(view, op, now)


RULES["fold"] = _fold
