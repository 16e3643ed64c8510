"""`wl browse` prints its table without rich when rich would print plain text (board/cli/output.plain_table):
the bytes must be rich's own. Compared with rich itself on seeded random tables at many console widths, and
through real `wl` processes where TTY_COMPATIBLE=0 makes browse use rich for the same plain output."""

from __future__ import annotations

import io
import os
import random
import subprocess
from pathlib import Path

import pytest
from remotes import WL, join_rig, make_commons
from rich.console import Console
from rich.table import Table

from board.cli.output import plain_table

HEADERS = ["ID", "STATUS", "TYPE", "P", "TITLE", "CLAIMED BY"]


def by_rich(headers: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in headers:
        table.add_column(col, overflow="ellipsis", no_wrap=col != "TITLE")
    for row in rows:
        table.add_row(*row)
    Console(file=out, highlight=False, soft_wrap=True).print(table)
    return out.getvalue()


def test_plain_tables_are_byte_for_byte_what_rich_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(k, raising=False)
    rng = random.Random(15)
    words = ["", "a", "open", "claimed", "scale item 42", "x" * 30, "two  spaces", " lead", "trail ", "-"]
    compared = refused = 0
    for _ in range(400):
        width = rng.choice([20, 40, 60, 79, 80, 81, 120, 200])
        monkeypatch.setenv("COLUMNS", str(width))
        headers = HEADERS + rng.choice([[], ["BOUNTY"], ["BOUNTY", "X"]])
        rows = [[rng.choice(words) + rng.choice(["", str(rng.randint(0, 10**rng.randint(0, 12)))])
                 for _ in headers] for _ in range(rng.randint(1, 6))]  # fmt: skip
        plain = plain_table(headers, rows)
        if plain is None:
            refused += 1
            continue
        compared += 1
        assert plain == by_rich(headers, rows), (width, headers, rows)
    assert compared > 50 and refused > 50  # both sides exercised


def test_what_rich_must_lay_out_is_left_to_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert plain_table(HEADERS, [["w-1", "open", "feature", "2", "t" * 100, ""]]) is None  # must wrap
    assert plain_table(HEADERS, [["w-1", "open", "feature", "2", "数据", ""]]) is None  # wide characters
    assert plain_table(HEADERS, [["w-1", "open", "feature", "2", "short", ""]]) is not None
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich would style it
    assert plain_table(HEADERS, [["w-1", "open", "feature", "2", "short", ""]]) is None


def test_a_real_browse_prints_the_same_bytes_with_and_without_rich(tmp_path: Path) -> None:
    commons = make_commons(tmp_path / "srv")
    alice = join_rig(tmp_path, str(commons), "alice")
    alice.post("short")
    alice.post("a title of some length, with punctuation: (x) [y] {z}", priority=0)
    alice.claim(alice.post("claimed one"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WL_", "FORCE_COLOR", "TTY_", "COLUMNS"))}

    def browse(*args: str, **extra: str) -> str:
        res = subprocess.run([WL, "--home", str(alice.home), "browse", *args], env={**env, **extra},
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stdout

    for args in ((), ("--status", "all")):
        plain = browse(*args)
        assert "ID  " in plain and "short" in plain
        assert plain == browse(*args, TTY_COMPATIBLE="0")  # rich lays it out: the same bytes
    narrow = browse("--status", "all", COLUMNS="40")  # too narrow for plain: rich wraps, as before
    assert narrow == browse("--status", "all", COLUMNS="40", TTY_COMPATIBLE="0")
    alice.post("ünïcode title")
    assert browse() == browse(TTY_COMPATIBLE="0")
