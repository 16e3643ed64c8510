"""Printing: one JSON document with --json, otherwise rich text (imported only when printing to people)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

_console: Any = None


def console(stderr: bool = False) -> Any:
    """A rich console (lazily imported: rich costs tens of milliseconds)."""
    global _console
    from rich.console import Console

    if stderr:
        return Console(stderr=True)
    if _console is None:
        _console = Console(highlight=False, soft_wrap=True)
    return _console


def emit(data: Any, human: Callable[[], None]) -> None:
    ctx = click.get_current_context()
    if ctx.obj is not None and ctx.obj.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    else:
        human()


def is_json() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.obj is not None and ctx.obj.json)


def say(text: str, style: str | None = None) -> None:
    """One human line. Never parsed as markup: titles, outputs and reasons come from the board.

    Off a terminal rich would print the same plain text, so scripts skip importing it (~30 ms a command).
    """
    if _console is None and not sys.stdout.isatty():
        sys.stdout.write(text + "\n")
        return
    console().print(text, style=style, markup=False, highlight=False)


def mutation_data(res: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "op": res.op.op,
        "id": res.op.id,
        "commit": res.commit,
        "pushed": res.pushed,
        "local_reason": res.local_reason,
        "attempts": res.attempts,
        "result": res.result,
    }


def report_push(res: Any) -> None:
    """Tell people where their change is: on the remote, or kept locally until `wl sync`."""
    if res.sync is not None and (res.sync.replayed or res.sync.conflicted):
        say(f"  synced {len(res.sync.replayed)} pending operation(s) first")
        for kept in res.sync.conflicted:
            say(f"  ⚠ could not replay {kept.op.op} {kept.op.id or ''}: {kept.reason} (kept in {kept.path})", "yellow")
    if res.sync is not None and res.sync.repaired and res.sync.invalid:  # the ledger's heal, published first
        say(f"  ⚠ repaired the commons first, excluding {res.sync.invalid[0].line()}", "yellow")
    if res.sync is not None and res.sync.republished:
        say(f"  republished {len(res.sync.republished)} operation(s) a history rewrite had dropped", "yellow")
    if not res.pushed:
        say(f"  ⚠ committed locally, not pushed: {res.local_reason}. Run `wl sync` to publish.", "yellow")
