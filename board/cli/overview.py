"""Read-only overviews: `wl status` (the board at a glance, what waits for me) and `wl log ID` (an item's history)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from board.cli.complete import ITEM_ID
from board.cli.main import Obj
from board.cli.output import emit, say
from board.records import STATUSES
from board.text import sanitize


def _lease_left(expires: str | None, now: datetime) -> int | None:
    """Seconds of lease left (negative once expired); None for a missing or unreadable time."""
    from board.ids import parse_time

    if not expires:
        return None
    try:
        return int((parse_time(expires) - now).total_seconds())
    except ValueError:
        return None


def _duration(seconds: int) -> str:
    if seconds < 0:
        return f"expired {_duration(-seconds)} ago"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _commit_time(commit: Any) -> str | None:
    """A commit's committer time as RFC 3339 (None for a time a hostile commit set out of range)."""
    from board.ids import fmt_time

    try:
        return fmt_time(datetime.fromtimestamp(commit.commit_time, UTC))
    except (OverflowError, ValueError, OSError):
        return None


def _brief(item: Any, **extra: Any) -> dict[str, Any]:
    return {"id": item.id, "title": item.title, "status": item.status, **extra}


@click.command()
@click.pass_obj
def status(obj: Obj) -> None:
    """The board at a glance: counts by status, my claims with lease left, what waits for me.

    Reads the local copy (`wl sync` refreshes it) and says when it last changed.
    """
    from board.ids import utcnow
    from board.index import Query

    board = obj.board()
    view = board.view()
    me = board.handle
    now = utcnow()
    # From the browse index (board/index.py): counts and a few filtered lists, not 100,000 parsed records.
    everything = view.query(Query(status=STATUSES[0], limit=0))
    counts = {s: 0 for s in STATUSES}
    counts.update({STATUSES[0]: everything.total, **everything.others})
    total = sum(counts.values())

    def listed(status: str, posted_by: str | None = None, claimed_by: str | None = None) -> list[Any]:
        q = Query(status=status, limit=None, count=False, posted_by=posted_by, claimed_by=claimed_by)
        return sorted(view.query(q).items, key=lambda i: i.id) if me else []  # the tree's order, as a full read

    mine = sorted(listed("claimed", claimed_by=me), key=lambda i: (i.claim_expires_at or "", i.id))
    claims = [_brief(i, claim_expires_at=i.claim_expires_at, lease_left_seconds=_lease_left(i.claim_expires_at, now))
              for i in mine]
    to_review = [_brief(i, claimed_by=i.claimed_by) for i in listed("in_review", posted_by=me)]
    submitted = [_brief(i, posted_by=i.posted_by) for i in listed("in_review", claimed_by=me)]
    pending = len(board.pending())
    meta = view.meta()
    as_of = _commit_time(board.store.commit(board.head()))
    data = {
        "as_of": as_of,
        "board": {"name": meta.get("name"), "board_id": meta.get("board_id")},
        "handle": me,
        "counts": counts,
        "total": total,
        "my_claims": claims,
        "to_review": to_review,
        "awaiting_review": submitted,
        "pending_ops": pending,
        "corrupt": view.corrupt,
    }

    def human() -> None:
        say(f"{sanitize(meta.get('name', '?'))} ({sanitize(meta.get('board_id', '?'))}) as {sanitize(me or '-')}", "bold")
        say(f"  local copy as of {as_of or 'an unreadable time'} (its last change; `wl sync` refreshes it)")
        shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        say(f"  {total} item(s)" + (f": {shown}" if shown else ""))
        if pending:
            say(f"  ⚠ {pending} local operation(s) not pushed yet: run `wl sync`", "yellow")
        sections: tuple[tuple[str, list[dict[str, Any]], Callable[[dict[str, Any]], str]], ...] = (
            ("My claims", claims, lambda c: _duration(c["lease_left_seconds"]) if c["lease_left_seconds"] is not None
             else "lease unknown"),
            ("Waiting for my review (wl accept / wl reject)", to_review, lambda c: f"done by {c['claimed_by']}"),
            ("Submitted by me, awaiting review", submitted, lambda c: f"posted by {c['posted_by']}"),
        )
        for title, rows, detail in sections:
            if not rows:
                continue
            say(f"{title}:")
            for row in rows:
                say(f"  {row['id']}  {sanitize(detail(row))}  {sanitize(row['title'])}")
        if not (claims or to_review or submitted):
            say("Nothing waits for you.")
        if view.corrupt:
            say(f"⚠ skipped {len(view.corrupt)} malformed entr{'y' if len(view.corrupt) == 1 else 'ies'}", "yellow")

    emit(data, human)


_DETAIL = {  # what a history line shows of an operation's arguments
    "post": ("title",),
    "claim": ("lease_seconds",),
    "renew": ("lease_seconds",),
    "done": ("evidence",),
    "accept": ("quality", "reliability", "severity"),
    "reject": ("reason",),
    "attest": ("verdict",),
    "archive": ("older_than",),
}


def _detail(op: str, args: dict[str, Any]) -> str:
    parts = []
    for key in _DETAIL.get(op, ()):
        if key in args:
            value = sanitize(args[key])
            parts.append(f"{key}={value[:60] + '…' if len(value) > 60 else value}")
    return " ".join(parts)


def _repair_excludes(op: Any, sha: bytes, refused: dict[str, str]) -> None:
    """Note the commits a (validated) repair commit says it excluded, naming the repair and who signed it."""
    if op.op != "repair" or sha.decode() in refused or not isinstance(op.args, dict):
        return
    excludes = op.args.get("excludes")
    for bad in excludes[:1000] if isinstance(excludes, list) else []:
        if isinstance(bad, str) and bad not in refused:
            refused[bad] = f"excluded by repair {sha.decode()[:7]} ({sanitize(op.by)})"


def history(board: Any, item_id: str, max_commits: int = 1_000_000) -> list[dict[str, Any]]:
    """The item's operations, oldest first, from one first-parent walk of the local board stopped at its post.

    What each commit's `Wl-Op` trailer records; commits without a readable trailer are passed over. A commit
    the ledger refused carries `refused` (why), where that is known without replaying the history: one that is
    not a signed operation at all (the ledger's first, stateless test), one the validated state excludes now
    (the ledger's reason), and one a later repair commit excluded (walking back, the repair comes first). An
    invalid signature or rule break is known only while the ledger excludes it, or once a repair names it.
    """
    from board.commits import FormatError, parse
    from board.ops import op_from_message

    store = board.store
    state = board.state()
    refused: dict[str, str] = {b.commit: b.reason for b in state.excluded}
    signed_era = not state.legacy  # before a wl-board/1 board's checkpoint, commits were taken unsigned
    out: list[dict[str, Any]] = []
    sha: bytes | None = board.head()
    walked = 0
    while sha is not None and walked < max_commits:
        walked += 1
        commit = store.commit(sha)
        if sha.decode() == state.checkpoint:
            signed_era = False
        op = op_from_message(commit.message.decode("utf-8", "replace"))
        if op is not None:
            _repair_excludes(op, sha, refused)
            if signed_era and commit.parents and sha.decode() not in refused:
                try:  # the ledger's first test, which needs no state: a signed operation, one parent
                    parse(commit.message)
                    if len(commit.parents) != 1:
                        refused[sha.decode()] = "it is a merge commit"
                except FormatError as e:
                    refused[sha.decode()] = str(e)
        ids = op.args.get("ids") if op is not None and op.op == "archive" else None
        archived = isinstance(ids, list) and item_id in ids  # one archive operation moves many items
        mine = [op] if op is not None and (op.id == item_id or archived) else []
        if op is not None and op.op == "fold":  # a fold carries results of many items, each its author's
            from board.folds import carried

            mine = [d for d in carried(op) if d.id == item_id]
        for own in mine:
            out.append({
                "op": own.op,
                "by": own.by,
                "at": own.at,
                "commit": sha.decode(),
                "committed_at": _commit_time(commit),
                "args": {k: v for k, v in own.args.items() if k != "ids"} if archived else own.args,
                "refused": refused.get(sha.decode()),
                **({"folded_by": op.by} if op is not None and op is not own else {}),
            })
            inner = _lane_claim(own.args.get("lane")) if own.op == "done" else None
            if inner is not None:  # the claim the done carried from its lane (the lane itself is gone)
                out.append({**out[-1], "op": inner.op, "by": inner.by, "at": inner.at, "args": inner.args,
                            "lane": True})  # fmt: skip
        if op is not None and op.id == item_id and op.op == "post" and sha.decode() not in refused:
            break
        parents = commit.parents
        sha = parents[0] if parents else None
    out.reverse()
    lane = board.lanes().get(item_id)
    for lane_sha, lane_op in zip(lane.commits, lane.ops, strict=True) if lane is not None else ():
        out.append({"op": lane_op.op, "by": lane_op.by, "at": lane_op.at, "commit": lane_sha.decode(),
                    "committed_at": _commit_time(store.commit(lane_sha)), "args": lane_op.args, "lane": True,
                    "refused": None})  # fmt: skip
    return out


def _lane_claim(proof: Any) -> Any:
    from board.lanes import claim_of

    return claim_of(proof) if proof is not None else None


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.pass_obj
def log(obj: Obj, item_id: str) -> None:
    """An item's history from the board's commits: who did what, when, and which commits the ledger refused
    (local copy; `wl sync` refreshes it)."""
    board = obj.board()
    iid = board.view().resolve(item_id)
    records = history(board, iid)

    def human() -> None:
        if not records:
            say(f"no recorded operations for {iid}")
        for r in records:
            line = f"{r['commit'][:7]}  {sanitize(r['at'])}  {sanitize(r['op']):<8} {sanitize(r['by']):<12}"
            args = r["args"] if isinstance(r["args"], dict) else {}
            detail = _detail(r["op"], {k: v for k, v in args.items() if k != "lane"})
            if r.get("lane"):
                detail = f"(on its claim lane) {detail}".rstrip()
            elif r.get("folded_by"):
                detail = f"(in a fold by {sanitize(r['folded_by'])}) {detail}".rstrip()
            if r.get("refused"):  # shown, never applied: the board's state does not include it
                say(f"{line}  ✗ refused by the ledger: {sanitize(r['refused'])}" + (f"  ({detail})" if detail else ""), "red")
                continue
            say((line + f"  {detail}") if detail else line.rstrip())

    emit(records, human)
