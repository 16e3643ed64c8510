"""Archiving (issue 15): completed and withdrawn items older than an age leave the live tree.

The `archive` operation (its rule is registered in board/ops.py) moves each item's record, completion and
attestations, bytes unchanged, from `wanted/ab/…`, `completions/ab/…`, `attestations/ab/…` (or their flat
forms) to the same paths under `archive/`. Only items whose status is completed or withdrawn and whose
`updated_at` lies at least `older_than` seconds (a day at least, so verifiers have time to attest) before the
operation's own time; anyone registered may do it; up to MAX_ARCHIVE_IDS items in one operation. Readers
treat an archived item as not live (TreeView.item raises Archived: every rule refuses it, and `post` refuses
its id), while `show` and `log` still find it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from board import layout
from board.errors import AlreadyApplied, Archived, NotFound, RuleError, UsageError, WrongStatus
from board.ids import check_item_id, parse_time
from board.records import Item

MIN_ARCHIVE_AGE = 86400  # a day at least: verifiers get time to attest before an item becomes history
MAX_ARCHIVE_AGE = 100 * 365 * 86400
MAX_ARCHIVE_IDS = 1000  # items one operation may move (each costs every validator one item read)
ARCHIVABLE = ("completed", "withdrawn")


class ArchiveView(Protocol):
    def item(self, item_id: str) -> Item | None: ...
    def read(self, path: str) -> bytes | None: ...


def _moves(view: Any, item_id: str) -> dict[str, bytes | None]:
    """The item, its completion and attestations (fanned or flat) moved to their archive paths, bytes as-is."""
    moves: list[tuple[str, str]] = [
        (layout.item_path(item_id), layout.archive_item_path(item_id)),
        (layout.item_flat_path(item_id), layout.archive_item_path(item_id)),
        (layout.completion_path(item_id), layout.archive_completion_path(item_id)),
        (layout.completion_flat_path(item_id), layout.archive_completion_path(item_id)),
    ]
    for folder in (layout.attestation_flat_dir(item_id), layout.attestation_dir(item_id)):
        for path, _ in view.files(folder):
            moves.append((path, f"{layout.archive_attestation_dir(item_id)}/{path.rsplit('/', 1)[-1]}"))
    changes: dict[str, bytes | None] = {}
    for live, kept in moves:
        raw = view.read(live)
        if raw is not None:
            changes[live] = None
            changes[kept] = raw
    return changes


def archive_changes(
    view: ArchiveView, op_id: str | None, args: dict[str, Any], at: str, now: datetime
) -> tuple[dict[str, bytes | None], dict[str, Any]]:
    """The file changes (and result) of an archive operation, or why the rules refuse it."""
    ids, older = args.get("ids"), args.get("older_than")
    if op_id is not None or not isinstance(ids, list) or not 1 <= len(ids) <= MAX_ARCHIVE_IDS:
        raise UsageError(f"archive takes a list of 1 to {MAX_ARCHIVE_IDS} item ids in args.ids")
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise UsageError("archive's ids must be distinct item ids")
    if isinstance(older, bool) or not isinstance(older, int) or not MIN_ARCHIVE_AGE <= older <= MAX_ARCHIVE_AGE:
        raise UsageError(f"archive's older_than must be whole seconds, at least {MIN_ARCHIVE_AGE} (a day)")
    cutoff = now - timedelta(seconds=older)
    changes: dict[str, bytes | None] = {}
    already = 0
    for item_id in ids:
        check_item_id(item_id)
        try:
            item = view.item(item_id)
        except Archived:
            already += 1
            continue
        if item is None:
            raise NotFound(item_id)
        if item.status not in ARCHIVABLE:
            raise WrongStatus(item.id, item.status, ARCHIVABLE, "only finished items are archived")
        if parse_time(item.updated_at) > cutoff:
            raise RuleError(f"wanted item {item.id} changed at {item.updated_at}, less than {older} s before {at}")
        changes.update(_moves(view, item_id))
    if already == len(ids):
        raise AlreadyApplied(f"the {len(ids)} item(s) are already archived")
    if already:
        raise RuleError(f"{already} of the {len(ids)} items are already archived")
    return changes, {"archived": list(ids), "older_than": older}
