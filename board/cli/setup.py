"""Commands that set a rig up and move its board: create, init, join, sync, config."""

from __future__ import annotations

from pathlib import Path

import click

from board.cli.main import Obj
from board.cli.output import emit, say
from board.text import sanitize


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Board name (default: the folder name).")
@click.pass_obj
def create(obj: Obj, path: Path, name: str | None) -> None:
    """Create a new bare commons repository at PATH."""
    from board.service import create_commons

    board_id = create_commons(path, name)
    emit(
        {"ok": True, "path": str(path.resolve()), "board_id": board_id},
        lambda: say(f"✓ Created commons {board_id} at {path}\n  Next: wl join {path.resolve()} --handle <you>"),
    )


@click.command()
@click.option("--handle", required=True, help="Your rig's handle.")
@click.option("--name", help="Board name.")
@click.pass_obj
def init(obj: Obj, handle: str, name: str | None) -> None:
    """Create a local-only board in the home (no remote)."""
    from board.service import init_local

    board = init_local(obj.home, handle, name)
    meta = board.meta()
    board.close()
    emit(
        {"ok": True, "home": str(obj.home.path), "handle": handle, "board_id": meta["board_id"]},
        lambda: say(f"✓ Initialised local board {meta['board_id']} in {obj.home.path} as {handle}"),
    )


@click.command()
@click.argument("url")
@click.option("--handle", required=True, help="Your rig's handle on this board.")
@click.option("--display-name", help="A human-readable name.")
@click.pass_obj
def join(obj: Obj, url: str, handle: str, display_name: str | None) -> None:
    """Clone the commons at URL and register this rig (creates its signing key)."""
    from board.cli.output import report_push
    from board.service import join as do_join

    if "://" not in url and Path(url).exists():
        url = str(Path(url).resolve())
    board, res = do_join(obj.home, url, handle, display_name)
    meta = board.meta()
    rig = board.view().rig(handle)
    board.close()

    def human() -> None:
        say(f"✓ Joined {sanitize(meta['name'])} ({meta['board_id']}) as {handle}")
        if rig is not None:
            say(f"  Address: {sanitize(rig.address)}")
        if res is not None:
            report_push(res)

    emit(
        {
            "ok": True,
            "board_id": meta["board_id"],
            "handle": handle,
            "address": rig.address if rig else None,
            "pushed": res.pushed if res else True,
            "already_registered": res is None,
        },
        human,
    )


@click.command()
@click.pass_obj
def sync(obj: Obj) -> None:
    """Pull and validate the remote, heal it (repair, republish), then replay and push local operations.

    Exits 1 when the remote holds an invalid commit (named with its author, committer and paths) or a
    local operation could not be replayed.
    """
    from dataclasses import asdict

    from board.errors import BoardError

    board = obj.board()
    report = board.sync()
    data = {
        "ok": not report.conflicted and not report.invalid,
        "head": report.head,
        "pushed": report.pushed,
        "replayed": [o.to_dict() for o in report.replayed],
        "already_applied": [o.to_dict() for o in report.already],
        "conflicted": [
            {"op": k.op.to_dict(), "reason": k.reason, "kept": k.path, "commit": k.commit} for k in report.conflicted
        ],
        "invalid": [asdict(b) for b in report.invalid],
        "repaired": report.repaired,
        "vanished": report.vanished,
        "republished": [o.to_dict() for o in report.republished],
        "not_republished": [{"op": o.to_dict(), "reason": r} for o, r in report.unrepublished],
        "checkpointed": report.checkpointed,
    }

    def human() -> None:
        for b in report.invalid:
            say(f"✗ {b.line()}", "red")
        if report.repaired:
            say("✓ published a repair: the remote holds the validated state again")
        if report.vanished:
            shown = ", ".join(v[:12] for v in report.vanished[:10])
            say(f"⚠ the remote's history was rewritten: {len(report.vanished)} commit(s) vanished ({shown})", "yellow")
        for o in report.republished:
            say(f"✓ republished {o.op} {o.id or ''} by {o.by} (under {o.by}'s own signature)")
        for o, reason in report.unrepublished:
            say(f"✗ could not republish {o.op} {o.id or ''} by {o.by}: {reason}", "red")
        if report.checkpointed:
            say("✓ checkpointed this wl-board/1 board: validation starts here")
        if not report.eventful():
            say(f"✓ Up to date at {report.head[:12]}")
            return
        for o in report.replayed:
            say(f"✓ replayed {sanitize(o.op)} {sanitize(o.id or '')}")
        for o in report.already:
            say(f"· already applied: {sanitize(o.op)} {sanitize(o.id or '')}")
        for k in report.conflicted:
            what = f"{k.op.op} {k.op.id or ''}: {k.reason}"
            say(f"✗ could not replay {sanitize(what)}", "red")
            say(f"  kept in {sanitize(k.path)}", "red")

    emit(data, human)
    if report.invalid:
        raise BoardError(f"the remote holds {len(report.invalid)} invalid commit(s), excluded: {report.invalid[0].line()}")
    if report.conflicted:
        raise BoardError(f"{len(report.conflicted)} operation(s) could not be replayed; their data is kept")


@click.command()
@click.argument("action", type=click.Choice(["get", "set", "list"]))
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.pass_obj
def config(obj: Obj, action: str, key: str | None, value: str | None) -> None:
    """Read or change the home's config.toml (`wl config get KEY`, `wl config set KEY VALUE`)."""
    from board.errors import ConfigError
    from board.home import CONFIG_KEYS

    home = obj.home
    if action == "list":
        data = home.load_config()

        def human() -> None:  # a hand-edited config.toml may hold anything: shown, never obeyed
            for k, v in sorted(data.items()):
                say(f"{sanitize(k)} = {sanitize(v)}")

        emit(data, human)
        return
    if key is None:
        raise ConfigError(f"wl config {action} needs a KEY")
    if action == "get":
        if key not in CONFIG_KEYS:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(CONFIG_KEYS))})")
        got = home.load_config().get(key)
        emit({key: got}, lambda: click.echo("" if got is None else sanitize(got)))
        return
    if value is None:
        raise ConfigError("wl config set needs a VALUE")
    typed = home.set_config(key, value)
    emit({"ok": True, key: typed}, lambda: say(f"✓ {key} = {sanitize(typed)}"))
