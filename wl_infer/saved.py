"""Results saved under `$WL_HOME/results/` before submission, and submitting them again.

A run writes its signed evidence here before the board commit, so a crash or a refused push never loses it.
`SavedResults` submits what is left (at a worker's start-up, and on a schedule for what this process kept),
through the same submit step a run uses, and moves aside what can no longer be submitted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from board.api import BoardError
from wl_infer.automation import Log
from wl_infer.codec import Evidence
from wl_infer.errors import CodecError

if TYPE_CHECKING:
    from board.api import Board

KEPT_RETRY_S = 10.0  # how soon a result whose submission failed is submitted again


def already_submitted(board: Board, item_id: str, me: str, evidence: Evidence) -> bool:
    """Whether the board's completion of `item_id` is this rig's with the same output (the submit landed)."""
    comp = board.view().completion(item_id)
    if comp is None or comp.completed_by != me:
        return False
    try:
        return Evidence.decode(comp.evidence).output_hash == evidence.output_hash
    except CodecError:
        return False


class SavedResults:
    """The saved results of one rig's home, and which of them this process must still submit."""

    def __init__(self, board: Board, me: str, lease_s: int, push: bool, log: Log,
                 online: Callable[[], bool]) -> None:  # fmt: skip
        self.board, self.me, self.lease_s, self.push, self.log, self.online = board, me, lease_s, push, log, online
        self.kept: dict[str, float] = {}  # results generated here whose submission failed: id -> when to retry
        self.resubmitted = 0

    def folder(self) -> Path:
        from wl_infer.jobs import results_dir  # here: `wl infer --help` imports this module, not the board

        return results_dir(self.board)

    def path(self, item_id: str) -> Path:
        return self.folder() / f"{item_id}.json"

    def keep(self, item_id: str) -> None:
        """Submit this one again in KEPT_RETRY_S (its run generated it, but could not submit it)."""
        self.kept[item_id] = time.monotonic() + KEPT_RETRY_S

    def retry_kept(self, force: bool) -> None:
        """Submit again what this process generated but could not submit (every KEPT_RETRY_S, and on exit)."""
        due = {i for i, when in self.kept.items() if force or when <= time.monotonic()}
        if not due:
            return
        self.resubmit(only=due)
        for item_id in due:
            if self.path(item_id).exists():
                self.keep(item_id)
            else:
                del self.kept[item_id]

    def resubmit(self, only: set[str] | None = None) -> None:
        """Submit results saved by a run that crashed or could not push; unsubmittable ones are moved aside.

        At start-up every saved result is taken; in the loop only those this process generated (`only`): a
        feeder's run sharing the home may be about to submit its own."""
        folder = self.folder()
        saved = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if only is not None:
            saved = [p for p in saved if p.stem in only]
        if not saved:
            return
        if not self.online():
            self.log("resubmit_later", count=len(saved), reason="remote unreachable")
            return
        for path in saved:
            self._resubmit(path)

    def _resubmit(self, path: Path) -> None:
        from board.api import check_item_id, lease_expired, utcnow
        from wl_infer.jobs import blob_attachments, submit_evidence

        try:
            record = orjson.loads(path.read_bytes())
            item_id = check_item_id(str(record["item_id"]))
            evidence = Evidence.from_dict(record["evidence"])
            blob = record.get("blob")
            item = self.board.get_item(item_id)
            landed = already_submitted(self.board, item_id, self.me, evidence)
        except (OSError, KeyError, TypeError, orjson.JSONDecodeError, BoardError) as e:
            self._set_aside(path, f"unreadable saved result: {e}")
            return
        if landed:
            path.unlink(missing_ok=True)  # it did reach the board before the crash
            self.log("resubmitted", id=item_id, already_on_board=True)
            return
        mine = item.status == "claimed" and item.claimed_by == self.me
        claimable = item.status == "open" or (item.status == "claimed" and lease_expired(item, utcnow()))
        if not mine and not claimable:
            self._set_aside(path, f"item is {item.status}" + (f" by {item.claimed_by}" if item.claimed_by else ""))
            return
        raw = str(blob).encode("utf-8") if blob is not None else None
        try:
            if not mine:
                self.board.mutate(self.board.new_op("claim", item_id, lease_seconds=self.lease_s), push=self.push)
            res = submit_evidence(self.board, item_id, evidence, blob_attachments(evidence, raw), self.push)
        except BoardError as e:
            self.log("resubmit_failed", id=item_id, error=str(e), path=str(path))
            return
        path.unlink(missing_ok=True)
        self.resubmitted += 1
        self.log("resubmitted", id=item_id, output_hash=evidence.output_hash, pushed=res.pushed, reclaimed=not mine)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Keep what cannot be submitted (nothing computed is deleted), out of the way of the next start."""
        aside = path.parent / "unsubmitted"
        aside.mkdir(parents=True, exist_ok=True)
        os.replace(path, aside / path.name)
        self.log("unsubmittable", file=path.name, reason=reason, kept=str(aside / path.name))
