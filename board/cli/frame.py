"""What every `wl` invocation shares: the global flags wherever they stand, and how a failure is printed.

`--json` and `--home` belong to the `wl` group, but people put them where `gh`, `git` and the Go `wl` let them:
after the command (`wl infer status ID --json`). The group lifts them to the front before click parses, so
they work for core and plugin commands alike. A failure is one line `wl: error: …` on stderr, or under
`--json` one JSON object `{"error": …, "exit_code": N}` on stderr, with the same exit codes either way.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

GLOBAL_FLAGS = ("--json",)
GLOBAL_OPTIONS = ("--home",)

_json_mode = False  # set by the group's argument scan, read when a failure is printed after the context closed


def lift_globals(args: list[str]) -> list[str]:
    """args with every `--json` and `--home X` / `--home=X` moved to the front (none after a `--`).

    A token that is the value of a subcommand's option cannot be told from a flag here, so `--title --json`
    posts without a title; write `--title=--json` for that title.
    """
    global _json_mode
    _json_mode = "--json" in (args[: args.index("--")] if "--" in args else args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            rest += args[i:]
            break
        if tok in GLOBAL_FLAGS:
            front.append(tok)
        elif tok in GLOBAL_OPTIONS:
            if i + 1 == len(args):
                raise click.UsageError(f"Option '{tok}' requires an argument.")
            front += [tok, args[i + 1]]
            i += 1
        elif any(tok.startswith(f"{opt}=") for opt in GLOBAL_OPTIONS):
            front.append(tok)
        else:
            rest.append(tok)
        i += 1
    return front + rest


def json_mode() -> bool:
    return _json_mode


def _one_line(text: str) -> str:
    from board.text import sanitize  # messages quote ids, paths and reasons from the board

    return sanitize(text)  # escapes every control character, newlines included: one line whatever the text


def print_error(message: str, exit_code: int, hint: str | None = None) -> None:
    """One failure on stderr: a `wl: error: …` line, or one JSON object under --json."""
    message = _one_line(message)
    if _json_mode:
        import orjson

        doc: dict[str, Any] = {"error": message, "exit_code": exit_code}
        if hint:
            doc["hint"] = _one_line(hint)
        sys.stderr.write(orjson.dumps(doc).decode() + "\n")
        sys.stderr.flush()
        return
    click.echo(f"wl: error: {message}" + (f" ({_one_line(hint)})" if hint else ""), err=True)


_NO_ARGS: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click ≥ 8.2: `wl` alone shows the help


def usage_error(e: click.UsageError) -> None:
    """Click's usage block (usage, hint, error) as one line, naming the help to read."""
    path = e.ctx.command_path if e.ctx is not None else "wl"
    if isinstance(e, _NO_ARGS):
        if not _json_mode:
            e.show()  # a bare `wl` or `wl infer` asks for the help, not for an error line
            return
        print_error("missing command", e.exit_code, f"try '{path} --help'")
        return
    message = " ".join(part.strip() for part in e.format_message().split("\n") if part.strip())  # click's own text
    print_error(message, e.exit_code, f"try '{path} --help'" if e.ctx is not None else None)


def run_guarded(invoke: Any) -> NoReturn:
    """Run the parsed command (invoke() returns click's non-standalone result) and exit as SPEC §5 says."""
    global _json_mode
    from board.errors import BoardError

    try:
        rc = invoke()
        code = rc if isinstance(rc, int) and not isinstance(rc, bool) else 0  # an Exit's code (wl doctor)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        print_error("aborted", 130)
        code = 130
    except click.UsageError as e:
        usage_error(e)
        code = e.exit_code
    except click.ClickException as e:
        print_error(e.format_message(), e.exit_code)
        code = e.exit_code
    except BoardError as e:
        print_error(str(e), e.exit_code)
        code = e.exit_code
    except KeyboardInterrupt:
        print_error("interrupted", 130)
        code = 130
    except BrokenPipeError:
        code = 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if os.environ.get("WL_DEBUG"):
            raise
        print_error(f"internal error: {type(e).__name__}: {e} (set WL_DEBUG=1 for details)", 1)
        code = 1
    finally:
        _json_mode = False  # outside an invocation (a test calling WlError.show) errors are human lines
    sys.exit(code)
