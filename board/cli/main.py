"""The `wl` command: a click group whose commands load lazily.

Core commands live in `board.cli.*` and plugin groups come from the `wl.plugins` entry points; nothing is
imported until a command is asked for, so `wl --help` and board commands never pay for engines or web3.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

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
}
PLUGIN_GROUP = "wl.plugins"


class WlError(click.ClickException):
    """Printed as one line, `wl: error: …`, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        from board.text import sanitize  # messages quote ids, paths and reasons from the board

        click.echo(f"wl: error: {sanitize(self.format_message())}", err=True)


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class WlGroup(click.Group):
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


@click.group(cls=WlGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    try:
        rc = cli.main(args=argv, prog_name="wl", standalone_mode=False)
        if isinstance(rc, int) and not isinstance(rc, bool) and rc:
            sys.exit(rc)  # outside standalone mode click returns an Exit's code instead of exiting (wl doctor)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("wl: aborted", err=True)
        sys.exit(130)
    except WlError as e:
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BoardError as e:
        WlError(str(e)).show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("wl: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if os.environ.get("WL_DEBUG"):
            raise
        WlError(f"internal error: {type(e).__name__}: {e} (set WL_DEBUG=1 for details)").show()
        sys.exit(1)
