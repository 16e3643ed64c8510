"""The `wl` command: a click group whose commands load lazily.

Core commands live in `board.cli.*` and plugin groups come from the `wl.plugins` entry points; nothing is
imported until a command is asked for, so `wl --help` and board commands never pay for engines or web3.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from board.cli.complete import ITEM_ID as ITEM_ID  # re-exported: plugin commands take item ids too
from board.errors import BoardError

CORE: dict[str, str] = {
    "create": "board.cli.setup:create",
    "init": "board.cli.setup:init",
    "join": "board.cli.setup:join",
    "post": "board.cli.items:post",
    "browse": "board.cli.items:browse",
    "show": "board.cli.items:show",
    "claim": "board.cli.items:claim",
    "unclaim": "board.cli.items:unclaim",
    "done": "board.cli.items:done",
    "accept": "board.cli.items:accept",
    "reject": "board.cli.items:reject",
    "close": "board.cli.items:close",
    "delete": "board.cli.items:delete",
    "sync": "board.cli.setup:sync",
    "config": "board.cli.setup:config",
    "doctor": "board.cli.doctor:doctor",
    "rig": "board.cli.rig:rig",
    "hook": "board.cli.hook:hook",
    "status": "board.cli.overview:status",
    "log": "board.cli.overview:log",
    "archive": "board.cli.archive:archive",
}
PLUGIN_GROUP = "wl.plugins"


class WlError(click.ClickException):
    """Printed as one line, `wl: error: …`, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        from board.cli.frame import print_error  # one line, or one JSON object under --json

        print_error(self.format_message(), self.exit_code)


def _plugins() -> dict[str, Any]:
    from board.entrypoints import entry_points  # cached: no metadata scan on every start

    return {ep.name: ep for ep in entry_points(PLUGIN_GROUP)}


class WlGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from board.cli.frame import lift_globals  # --json / --home after the command, as gh and git allow

        return super().parse_args(ctx, lift_globals(args))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        from board.cli.frame import run_guarded  # one-line (or JSON) errors for CliRunner and `wl` alike

        run_guarded(lambda: run(args, prog_name, complete_var, standalone_mode=False, **extra))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(CORE) | set(_plugins()) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = CORE.get(name)
        if target is not None:
            module, attr = target.split(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        ep = _plugins().get(name)
        if ep is None:
            return None
        try:
            loaded: click.Command = ep.load()
        except ImportError as e:
            reason = f"plugin {name!r} could not be loaded: {e}"

            def broken() -> None:
                raise WlError(reason)

            return click.Command(name, callback=broken, help=f"(unavailable: {e})")
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BoardError as e:
            raise WlError(str(e), e.exit_code) from None
        except OSError as e:
            raise WlError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None
        except Exception as e:
            from board.keys import KeyFileError

            if isinstance(e, KeyFileError):
                raise WlError(str(e)) from None
            raise


class Obj:
    """Per-invocation settings shared by every command."""

    def __init__(self, home: Path | None, as_json: bool) -> None:
        self._home = home
        self.json = as_json

    @property
    def home(self) -> Any:
        from board.home import Home, default_home

        return Home(self._home or default_home())

    def board(self) -> Any:
        from board.service import Board

        board = Board(self.home)
        click.get_current_context().call_on_close(board.close)
        return board


@click.group(name="wl", cls=WlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Home directory (config, key, local clone); default $WL_HOME.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of human text.")
@click.version_option(package_name="wl-infer", prog_name="wl")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, as_json: bool) -> None:
    """wl: a wanted board replicated by git push/pull.

    Work items are JSON files in a git repository; every change is one commit, pushed with
    compare-and-swap so contested claims have exactly one winner.
    """
    ctx.obj = Obj(home, as_json)
    from board.cli.output import install_warnings

    install_warnings()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="wl")  # exits with SPEC's codes; errors are one line or one JSON object
