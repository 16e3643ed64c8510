"""`wl hook install BARE_REPO`: make a bare commons validate every push with the same rules as every rig."""

from __future__ import annotations

from pathlib import Path

import click

from board.cli.main import Obj
from board.cli.output import emit, say


@click.group()
def hook() -> None:
    """Server-side validation hooks for a bare commons."""


@hook.command()
@click.argument("repo", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--force", is_flag=True, help="Replace a pre-receive hook that wl did not write.")
@click.pass_obj
def install(obj: Obj, repo: Path, force: bool) -> None:
    """Install a pre-receive hook in REPO that refuses any push holding an invalid commit or a rewrite."""
    from board.hook import install as do_install
    from board.hook import seed

    path = do_install(repo.resolve(), force)
    problems = seed(repo.resolve())

    def human() -> None:
        say(f"✓ Installed {path}: pushes to main are validated; invalid ones are refused")
        for line in problems:
            say(f"⚠ the history already there holds an invalid commit: {line}", "yellow")

    emit({"ok": True, "hook": str(path), "existing_invalid": problems}, human)
