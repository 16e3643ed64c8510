"""Printing: one JSON document with --json, otherwise rich text (imported only when printing to people)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from board.text import sanitize

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

    Every control character but the newline is shown escaped, whoever built the text; callers sanitise
    board strings themselves too (with `sanitize`, newlines included) so a title cannot forge a line.
    Off a terminal rich would print the same plain text, so scripts skip importing it (~30 ms a command).
    """
    text = sanitize(text, keep_newlines=True)
    if _console is None and not sys.stdout.isatty():
        sys.stdout.write(text + "\n")
        return
    console().print(text, style=style, markup=False, highlight=False)


def plain_table(headers: list[str], rows: list[list[str]]) -> str | None:
    """The lines rich prints for `Table(box=None, pad_edge=False)` of these cells when it would print plain
    text: off a terminal, colour not forced, printable ASCII cells, and every column at its natural width
    within the console's (rich's width: $COLUMNS, else the first of stdin, stdout, stderr that is a terminal,
    else 80). None when rich must do it (shrink or wrap a column, measure wide characters, style): importing
    and running rich for a plain listing costs about 40 ms."""
    if os.name == "nt" or sys.stdout.isatty() or any(k in os.environ for k in _RICH_FORCING):
        return None
    cells = [headers, *rows]
    if not all(c.isascii() and c.isprintable() for row in cells for c in row):
        return None
    columns = os.environ.get("COLUMNS")
    width: int | None = int(columns) if columns is not None and columns.isdigit() else None
    for fd in (0, 1, 2) if width is None else ():
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            continue
    widths = [max(len(row[j]) for row in cells) for j in range(len(headers))]
    last = len(headers) - 1
    if sum(widths) + 2 * last > (width or 80):
        return None
    return "".join("".join((" " if j else "") + c.ljust(widths[j]) + (" " if j < last else "")
                           for j, c in enumerate(row)) + "\n" for row in cells)


_RICH_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")


def cell(value: Any, style: str = "") -> Any:
    """A table cell from a board string: sanitised, and a rich Text so markup in it is never interpreted."""
    from rich.text import Text

    return Text(sanitize("" if value is None else value), style=style)


def warn(text: str) -> None:
    """One `wl: warning: …` line on stderr (sanitised: warnings quote board paths and reasons)."""
    click.echo(f"wl: warning: {sanitize(text)}", err=True)


MAX_WARNINGS = 20  # a participant can push 100,000 bad entries; nobody reads more than a screenful


class _WarningLines(logging.Handler):
    """Prints the board readers' warnings (a skipped entry, say) once per command, as `wl: warning:` lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if text in self.seen or len(self.seen) > MAX_WARNINGS:
                return
            self.seen.add(text)
            if len(self.seen) > MAX_WARNINGS:
                warn(f"more than {MAX_WARNINGS} warnings; the rest are not shown (`wl --json browse` lists "
                     "every skipped entry under \"corrupt\")")
            else:
                warn(text)
        except Exception:  # noqa: BLE001 - a warning must never become the failure
            self.handleError(record)


_handler = _WarningLines()


def install_warnings() -> None:
    """Route `wl.*` warnings to stderr for this command (called once per invocation by the CLI group)."""
    logger = logging.getLogger("wl")
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
        logger.propagate = False
    _handler.seen.clear()


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
            what = sanitize(f"{kept.op.op} {kept.op.id or ''}: {kept.reason} (kept in {kept.path})")
            say(f"  ⚠ could not replay {what}", "yellow")
    if res.sync is not None and res.sync.repaired and res.sync.invalid:  # the ledger's heal, published first
        say(f"  ⚠ repaired the commons first, excluding {sanitize(res.sync.invalid[0].line())}", "yellow")
    if res.sync is not None and res.sync.republished:
        say(f"  republished {len(res.sync.republished)} operation(s) a history rewrite had dropped", "yellow")
    if not res.pushed:
        say(f"  ⚠ committed locally, not pushed: {sanitize(res.local_reason)}. Run `wl sync` to publish.", "yellow")
