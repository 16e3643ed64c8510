"""Keep the README's CLI reference generated from `--help`, so the docs never drift from the commands.

    python tests/readme_cli.py --write   # regenerate the section
    python tests/readme_cli.py --check   # CI: fail when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _walk(group: click.Group, path: list[str], ctx: click.Context) -> list[list[str]]:
    out = [path]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or name == "demo" and path:
            continue
        if isinstance(cmd, click.Group):
            out += _walk(cmd, path + [name], ctx)
        else:
            out.append(path + [name])
    return out


def render() -> str:
    from board.cli.main import cli

    runner = CliRunner()
    ctx = click.Context(cli)
    parts = [START, ""]
    for path in _walk(cli, [], ctx):
        result = runner.invoke(cli, [*path, "--help"], prog_name="wl", terminal_width=100)
        text = result.output.rstrip()
        parts += [f"#### `{' '.join(['wl', *path])}`", "", "```", text, "```", ""]
    parts.append(END)
    return "\n".join(parts)


def main() -> int:
    text = README.read_text()
    if START not in text or END not in text:
        print("README.md has no cli-reference markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    fresh = head + render() + tail
    if "--write" in sys.argv:
        README.write_text(fresh)
        return 0
    if fresh != text:
        print("README.md CLI reference is stale: run python tests/readme_cli.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
