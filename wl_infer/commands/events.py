"""The event log of `wl infer worker` and `wl infer feed`: one JSON line per event for machines, a live rich
panel for people, and under `--json --once` one document (`{"events": [...], "summary": {...}}`) printed
at the end, as every other command prints one. The loops only call it as a `Log` (an event name and data);
all display lives here.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short(value: Any) -> str:
    """A value as the panel shows it: floats rounded, long text (hashes, errors) cut."""
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


class EventLog:
    """One JSON line per event (flushed) when stdout is not a terminal or under --json; else a rich Live panel.

    With `document`, the events are kept and printed as one JSON document when the log closes: the summary is
    the `stopped` event's figures plus `exit_code` (set by the command; null when it failed, the error then
    being on stderr).
    """

    def __init__(self, live: bool, title: str, status: Callable[[], list[tuple[str, str]]],
                 document: bool = False) -> None:  # fmt: skip
        self.live = live and not document
        self.title = title
        self.status = status
        self.document = document
        self.events: list[dict[str, Any]] = []
        self.exit_code: int | None = None
        self.recent: deque[str] = deque(maxlen=8)
        self._lock = threading.Lock()
        self._live: Any = None

    def __call__(self, event: str, /, **data: Any) -> None:
        record = {"event": event, "at": _stamp(), **data}
        with self._lock:
            if self.document:
                self.events.append(record)
            elif self.live:
                shown = " ".join(f"{k}={_short(v)}" for k, v in data.items() if v is not None)
                self.recent.append(f"{record['at'][11:19]} {event} {shown}")
            else:
                sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
                sys.stdout.flush()

    def render(self) -> Any:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        from board.api import sanitize

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, value in self.status():
            grid.add_row(label, Text(sanitize(value)))
        events = Text("\n".join(sanitize(line) for line in self.recent) or "(no events yet)", style="dim", no_wrap=True, overflow="ellipsis")
        body = Table.grid()
        body.add_row(grid)
        body.add_row(Text(""))
        body.add_row(events)
        return Panel(body, title=self.title, border_style="cyan")

    def __enter__(self) -> EventLog:
        if self.live:
            from rich.live import Live

            from board.cli.output import console

            self._live = Live(get_renderable=self.render, console=console(), refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.document:
            with self._lock:
                stopped: dict[str, Any] = next((e for e in reversed(self.events) if e["event"] == "stopped"), {})
                summary = {k: v for k, v in stopped.items() if k not in ("event", "at")}
                doc = {"events": self.events, "summary": {**summary, "exit_code": self.exit_code}}
                sys.stdout.write(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
                sys.stdout.flush()


def wants_live() -> bool:
    from board.cli.output import is_json

    return not is_json() and sys.stdout.isatty()


def wants_document(once: bool) -> bool:
    """`--json --once` is one command with one answer; the open-ended loop streams JSON lines instead."""
    from board.cli.output import is_json

    return once and is_json()
