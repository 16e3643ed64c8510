"""Progress for people: a rich display on stderr while a model is assembled or tokens are generated.

Only on a terminal (stderr a TTY) and never under --json; otherwise `progress_view` yields no callback and the
backends report to nobody, so piped output and logs stay clean. The backends call the callback from the thread
doing the work (wl_infer.backends.base.ProgressFn); rich's Progress is safe to update from there.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wl_infer.backends.base import ProgressFn


def wants_progress() -> bool:
    from board.cli.output import is_json

    return not is_json() and sys.stderr.isatty()


class _View:
    """One spinner line for the whole command, and a bar per kind of work as it starts reporting."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self.main = self.progress.add_task(label, total=None, detail="")
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int | None) -> None:
        task = self.tasks.get(what)
        if task is None:
            title = "Assembling the model" if what == "assemble" else "Generating"
            task = self.tasks[what] = self.progress.add_task(title, total=total or None, detail="")
            self.started[what] = time.monotonic()
        elapsed = time.monotonic() - self.started[what]
        if what == "assemble":
            mib, of = done / (1 << 20), (total or 0) / (1 << 20)
            detail = f"{mib:.0f}/{of:.0f} MiB"
        else:
            rate = f", {done / elapsed:.1f} tok/s" if elapsed > 0 and done else ""
            detail = f"{done} tokens" + (f" of ≤{total}" if total else "") + rate
        self.progress.update(task, completed=done, total=total or None, detail=detail)


@contextlib.contextmanager
def progress_view(label: str) -> Iterator[ProgressFn | None]:
    """The callback to hand the backends (None off a terminal), with its display running meanwhile."""
    if not wants_progress():
        yield None
        return
    view = _View(label)
    with view.progress:
        yield view
