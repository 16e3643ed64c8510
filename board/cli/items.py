"""Commands on items: post, browse, show, and the lifecycle transitions."""

from __future__ import annotations

import sys
from typing import Any

import click

from board.cli.complete import ITEM_ID
from board.cli.main import Obj
from board.cli.output import cell, emit, mutation_data, plain_table, report_push, say
from board.records import EFFORTS, SEVERITIES, STATUSES, TYPES
from board.text import sanitize

no_push_option = click.option(
    "--no-push", is_flag=True, help="Commit locally only; `wl sync` publishes it later."
)


def _resolve(board: Any, prefix: str, online: bool) -> str:
    """The item id for prefix; an item the local copy has not seen yet is looked up on a fresh fetch."""
    from board.errors import NotFound, Unreachable

    try:
        item_id: str = board.view().resolve(prefix)
        return item_id
    except NotFound:
        if not online or board.remote is None:
            raise
        try:
            origin = board.refresh()
        except Unreachable:
            raise NotFound(prefix) from None
    try:
        item_id = board.view().resolve(prefix)
    except NotFound:
        if origin is None:
            raise
        from board.view import TreeView

        item_id = TreeView(board.store, board.store.tree_id(origin)).resolve(prefix)  # local work pending
    return item_id


def _mutate(obj: Obj, op_name: str, prefix: str | None, no_push: bool, done_text: str, **args: Any) -> Any:
    board = obj.board()
    item_id = _resolve(board, prefix, not no_push) if prefix is not None else None
    op = board.new_op(op_name, item_id, **args)
    res = board.mutate(op, push=not no_push)

    def human() -> None:
        say(done_text.format(id=item_id, **args))
        report_push(res)

    emit(mutation_data(res), human)
    return res


@click.command()
@click.option("--title", required=True)
@click.option("--description", default="")
@click.option("--type", "item_type", type=click.Choice(TYPES), default="feature", show_default=True)
@click.option("--priority", type=click.IntRange(0, 4), default=2, show_default=True)
@click.option("--effort", type=click.Choice(EFFORTS), default="medium", show_default=True)
@click.option("--project", default="")
@click.option("--tag", "tags", multiple=True, help="Repeatable.")
@no_push_option
@click.pass_obj
def post(
    obj: Obj,
    title: str,
    description: str,
    item_type: str,
    priority: int,
    effort: str,
    project: str,
    tags: tuple[str, ...],
    no_push: bool,
) -> None:
    """Post a new wanted item."""
    from board.ids import new_item_id, utcnow

    board = obj.board()
    item_id = new_item_id(title, utcnow())
    op = board.new_op(
        "post",
        item_id,
        title=title,
        description=description,
        type=item_type,
        priority=priority,
        effort_level=effort,
        project=project,
        tags=list(tags),
    )
    res = board.mutate(op, push=not no_push)

    def human() -> None:
        say(f"✓ Posted {item_id}: {sanitize(title)}")
        report_push(res)

    emit(mutation_data(res), human)


@click.command()
@click.option("--status", type=click.Choice((*STATUSES, "archived", "all")), default="open", show_default=True,
              help="`archived`: items moved out of the live tree (same as --archived).")
@click.option("--type", "item_type", type=click.Choice(TYPES))
@click.option("--project", help="Only this project.")
@click.option("--tag", "tags", multiple=True, help="Only items with this tag (repeatable: all of them).")
@click.option("--priority", type=click.IntRange(0, 4), help="Only this priority.")
@click.option("--posted-by", help="Only items this handle posted.")
@click.option("--claimed-by", help="Only items this handle holds.")
@click.option("--mine", is_flag=True, help="Only items I posted or hold.")
@click.option("--archived", is_flag=True, help="List archived items (any status, or the one --status names).")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.pass_obj
def browse(
    obj: Obj, status: str, item_type: str | None, project: str | None, tags: tuple[str, ...], priority: int | None,
    posted_by: str | None, claimed_by: str | None, mine: bool, archived: bool, limit: int,
) -> None:
    """List items on the board (local copy; `wl sync` refreshes it)."""
    from board import quick
    from board.index import Query

    home = obj.home
    handle = home.load_config().get("handle")  # a broken config fails here as it does on the full path
    archived = archived or status == "archived"
    wanted: str | None = None if status in ("all", "archived") or (archived and status == "open") else status
    q = Query(status=wanted, archived=archived, type=item_type, project=project, priority=priority,
              posted_by=posted_by, claimed_by=claimed_by, involves=handle if mine else None,
              tags=tags, limit=limit)
    fast = quick.answer(home, q)  # warm: from the index alone, when nothing it was built from changed
    if fast is not None:
        res, corrupt = fast.result, fast.corrupt
    else:
        before = quick.stamp(home)
        with quick.Capture().on() as seen:
            view = obj.board().view()
            res = view.query(q)
        quick.record(home, before, view, q, seen.seen)
        corrupt = view.corrupt
    items, total = res.items, res.total
    from board.cli.columns import plugin_columns
    from board.cli.output import warn

    extra = plugin_columns(items, warn)  # plugins' columns (entry point wl.browse_columns)
    data = {"items": [i.to_dict() for i in items], "total": total, "corrupt": corrupt, "columns": extra}
    elsewhere = ""
    if not items and res.others:  # an empty listing says where the items are (all in review, say)
        elsewhere = "; " + ", ".join(f"{n} {s}" for s, n in sorted(res.others.items())) + " — try --status all"
    shown = "archived" if archived and wanted is None else f"archived, {wanted}" if archived else wanted

    def human() -> None:
        headers = ["ID", "STATUS", "TYPE", "P", "TITLE", "CLAIMED BY", *(name.upper() for name in extra)]
        rows = [[sanitize(v) for v in (i.id, i.status, i.type, str(i.priority), i.title, i.claimed_by or "",
                                       *(values.get(i.id, "") for values in extra.values()))] for i in items]
        plain = plain_table(headers, rows) if items else None
        if plain is not None:
            sys.stdout.write(plain)  # what rich would print here, without loading it
        elif items:
            from rich.table import Table

            from board.cli.output import console

            table = Table(box=None, header_style="bold", pad_edge=False)
            for col in headers:
                table.add_column(col, overflow="ellipsis", no_wrap=col != "TITLE")
            colours = {"open": "green", "claimed": "yellow", "in_review": "cyan", "completed": "dim",
                       "withdrawn": "dim"}
            for i, row in zip(items, rows, strict=True):
                table.add_row(*(cell(v, colours.get(i.status, "white") if k == 1 else "") for k, v in enumerate(row)))
            console().print(table)
        say(f"{len(items)} of {total} item(s)" + (f" ({shown})" if shown else "") + elsewhere)
        if corrupt:  # each is named by a `wl: warning:` line on stderr
            say(f"⚠ skipped {len(corrupt)} malformed entr{'y' if len(corrupt) == 1 else 'ies'}", "yellow")

    emit(data, human)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.pass_obj
def show(obj: Obj, item_id: str) -> None:
    """Show one item, its completion and attestations."""
    board = obj.board()
    view = board.view()
    from board.errors import Archived

    iid = view.resolve(item_id)
    try:
        found, archived = view.item(iid), False
        comp, atts = view.completion(iid), view.attestations(iid)
    except Archived:  # history now: read from archive/
        found, archived = view.archived_item(iid), True
        comp, atts = view.archived_completion(iid), view.archived_attestations(iid)
    assert found is not None
    item = found
    data = {"item": item.to_dict(), "completion": comp.to_dict() if comp else None, "attestations": atts,
            "archived": archived}

    def human() -> None:
        say(f"{item.id}  {sanitize(item.title)}", "bold")
        rows = [
            ("status", item.status + (" (archived)" if archived else "")),
            ("type", item.type),
            ("priority", str(item.priority)),
            ("effort", item.effort_level),
            ("project", item.project),
            ("tags", ", ".join(item.tags)),
            ("posted by", item.posted_by),
            ("claimed by", item.claimed_by or ""),
            ("lease until", item.claim_expires_at or ""),
            ("created", item.created_at),
            ("updated", item.updated_at),
        ]
        for k, v in rows:
            if v:
                say(f"  {k:<12} {sanitize(v)}")
        if item.description:
            say("  description:")
            for line in item.description.split("\n")[:20]:  # only \n breaks a line; \r and friends are shown
                say(f"    {sanitize(line)}")
        if comp is not None:
            say(f"  completion   {comp.id} by {comp.completed_by} at {comp.completed_at}")
            if comp.stamp:
                s = comp.stamp
                got = f"by {s.get('by')}: quality {s.get('quality')}, reliability {s.get('reliability')}"
                say(f"  accepted     {sanitize(got)}")
        for who, att in sorted(atts.items()):
            say(f"  attestation  {sanitize(who)}: {sanitize(att.get('verdict', '?'))}")

    emit(data, human)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--lease", type=click.IntRange(1, 30 * 24 * 60), default=None, help="Lease in minutes (default 30).")
@no_push_option
@click.pass_obj
def claim(obj: Obj, item_id: str, lease: int | None, no_push: bool) -> None:
    """Claim an open item (or one whose lease expired)."""
    minutes = lease or int(obj.home.load_config().get("lease", 30))
    _mutate(obj, "claim", item_id, no_push, "✓ Claimed {id} for {lease_seconds}s", lease_seconds=minutes * 60)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@no_push_option
@click.pass_obj
def unclaim(obj: Obj, item_id: str, no_push: bool) -> None:
    """Release a claim (the claimer, the poster, or anyone once the lease expired)."""
    _mutate(obj, "unclaim", item_id, no_push, "✓ Released {id}")


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--evidence", required=True, help="What was done (a URL, a hash, a JSON record).")
@no_push_option
@click.pass_obj
def done(obj: Obj, item_id: str, evidence: str, no_push: bool) -> None:
    """Submit completion evidence for an item you claimed."""
    from board.ids import new_completion_id

    _mutate(
        obj, "done", item_id, no_push, "✓ Submitted {id} for review", evidence=evidence,
        completion_id=new_completion_id(),
    )


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--quality", type=click.IntRange(1, 5), required=True)
@click.option("--reliability", type=click.IntRange(1, 5))
@click.option("--severity", type=click.Choice(SEVERITIES), default="leaf", show_default=True)
@no_push_option
@click.pass_obj
def accept(obj: Obj, item_id: str, quality: int, reliability: int | None, severity: str, no_push: bool) -> None:
    """Accept a completion (the poster, never the claimer)."""
    args: dict[str, Any] = {"quality": quality, "severity": severity}
    if reliability is not None:
        args["reliability"] = reliability
    _mutate(obj, "accept", item_id, no_push, "✓ Accepted {id}", **args)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--reason", default="")
@no_push_option
@click.pass_obj
def reject(obj: Obj, item_id: str, reason: str, no_push: bool) -> None:
    """Reject a completion: the item goes back to its claimer."""
    _mutate(obj, "reject", item_id, no_push, "✓ Rejected the completion of {id}", reason=reason)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@no_push_option
@click.pass_obj
def close(obj: Obj, item_id: str, no_push: bool) -> None:
    """Close an item in review without a rating."""
    _mutate(obj, "close", item_id, no_push, "✓ Closed {id}")


@click.command()
@click.argument("item_id", type=ITEM_ID)
@no_push_option
@click.pass_obj
def delete(obj: Obj, item_id: str, no_push: bool) -> None:
    """Withdraw an open item you posted."""
    _mutate(obj, "delete", item_id, no_push, "✓ Withdrew {id}")
