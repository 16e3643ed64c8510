"""`wl archive`: move completed and withdrawn items older than an age out of the live tree (board/ops.py)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import click

from board.cli.main import Obj
from board.cli.output import emit, mutation_data, report_push, say

AGE_RE = re.compile(r"^(\d{1,6})([dhms]?)\Z")
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 86400}
DEFAULT_DAYS = 30


def parse_age(text: str) -> int:
    """`30d`, `36h`, `90m`, `86400s` (a bare number is days) → seconds."""
    m = AGE_RE.match(text.strip().lower())
    if m is None:
        raise click.BadParameter(f"{text!r} is not an age like 30d, 36h or 90m")
    return int(m.group(1)) * UNITS[m.group(2)]


def archivable(view: Any, older_than: int, now: Any) -> list[str]:
    """Ids of the live items the archive rule would move now: finished, and unchanged for `older_than` s."""
    from datetime import timedelta

    from board.archive import ARCHIVABLE
    from board.ids import parse_time
    from board.index import Query

    cutoff = now - timedelta(seconds=older_than)
    out = []
    for status in ARCHIVABLE:
        for item in view.query(Query(status=status, limit=None)).items:
            if parse_time(item.updated_at) <= cutoff:
                out.append(item.id)
    return sorted(out)


@click.command()
@click.option("--older-than", "older", help=f"Age: 30d, 36h, 90m (default: config archive_after, {DEFAULT_DAYS} days; "
              "at least a day).")
@click.option("--dry-run", is_flag=True, help="Only list what would be archived.")
@click.option("--no-push", is_flag=True, help="Commit locally only; `wl sync` publishes it later.")
@click.pass_obj
def archive(obj: Obj, older: str | None, dry_run: bool, no_push: bool) -> None:
    """Archive completed and withdrawn items older than an age (show and log still find them)."""
    from board.archive import MAX_ARCHIVE_IDS, MIN_ARCHIVE_AGE
    from board.errors import AlreadyApplied, Unreachable, UsageError
    from board.ids import utcnow

    board = obj.board()
    seconds = parse_age(older) if older else int(board.config.get("archive_after", DEFAULT_DAYS)) * 86400
    if seconds < MIN_ARCHIVE_AGE:
        raise UsageError(f"items are archived a day after they finished at the earliest (got {seconds} s)")
    if not no_push and board.remote is not None:
        with contextlib.suppress(Unreachable):  # offline: the local copy decides, the rule re-checks later
            board.refresh()  # decide on the freshest validated state; the rule re-checks each item anyway
    ids = archivable(board.view(), seconds, utcnow())
    done: list[dict[str, Any]] = []
    results = []
    if not dry_run:
        for start in range(0, len(ids), MAX_ARCHIVE_IDS):
            op = board.new_op("archive", None, ids=ids[start:start + MAX_ARCHIVE_IDS], older_than=seconds)
            try:
                res = board.mutate(op, push=not no_push)
            except AlreadyApplied:
                continue
            results.append(res)
            done.append(mutation_data(res))
    data = {"older_than": seconds, "dry_run": dry_run, "archivable" if dry_run else "archived": ids,
            "commits": done}

    def human() -> None:
        verb = "would archive" if dry_run else "archived"
        say(f"{'' if dry_run else '✓ '}{verb} {len(ids)} item(s) finished more than {seconds // 3600} h ago"
            + (f" in {len(done)} commit(s)" if done else ""))
        for res in results:
            report_push(res)
        if dry_run:
            for item_id in ids[:50]:
                say(f"  {item_id}")
            if len(ids) > 50:
                say(f"  … and {len(ids) - 50} more")

    emit(data, human)
