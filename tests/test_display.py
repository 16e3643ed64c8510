"""Board strings on a terminal: control characters and escape sequences are shown, never obeyed.

`board.text.sanitize` is tested on its own (and as a property over arbitrary text); then hostile titles,
descriptions, board names, attestations and entry names go through `browse`, `show`, `doctor` and warnings,
in-process and in a real `wl` on a pseudo-terminal (where rich colours its own output), while `--json` keeps
every value exact.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import unicodedata
from pathlib import Path

import orjson
import pytest
from hostile_git import Mallory
from hypothesis import given
from hypothesis import strategies as st
from remotes import WL
from test_board_cli import run

from board.cli.main import WlError
from board.text import is_clean, sanitize

ATTACK = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\rover\bX\x9b1m\u202etxt.exe\u2066 [bold red]markup[/bold red]"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\rover\\x08X\\x9b1m\\u202etxt.exe\\u2066 [bold red]markup[/bold red]"


# --- the helper ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (ATTACK, SHOWN),
        ("a\nb\tc\x00d\x7f", "a\\nb\\tc\\x00d\\x7f"),
        ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", "\\u202a\\u202b\\u202c\\u202d\\u202e"
         "\\u2066\\u2067\\u2068\\u2069"),
        ("line\u2028sep\u2029para\u200bzw\ufeffbom", "line\\u2028sep\\u2029para\\u200bzw\\ufeffbom"),
        ("hidden\U000e0041\U000e0042", "hidden\\U000e0041\\U000e0042"),
        ("lone \udcff surrogate", "lone \\udcff surrogate"),
        ("café 中文 👩\u200d💻 ok", "café 中文 👩\u200d💻 ok"),  # text, joiners and emoji stay as they are
        ("", ""),
    ],
)
def test_sanitize_shows_every_control_character(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown
    assert sanitize(shown) == shown  # what it prints is inert itself


def test_keep_newlines_and_non_strings() -> None:
    assert sanitize("one\ntwo\r\n", keep_newlines=True) == "one\ntwo\\r\n"
    assert sanitize(3) == "3" and sanitize(None) == "None"
    assert is_clean("plain text") and not is_clean("a\x1bb")


@given(st.text())
def test_sanitized_text_holds_no_control_or_format_character(text: str) -> None:
    out = sanitize(text)
    assert all(ch in "\u200c\u200d" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in out)
    out.encode("utf-8")  # always printable, even from lone surrogates
    if is_clean(text):
        assert out == text


def test_error_lines_are_sanitised(capsys: pytest.CaptureFixture[str]) -> None:
    WlError(f"corrupt record wanted/{ATTACK}.json: x").show()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and err.count("\n") == 1 and SHOWN in err


# --- through the commands -----------------------------------------------------------------------------------
def no_raw_controls(text: str) -> None:
    for ch in ("\x1b", "\r", "\b", "\x07", "\x9b", "\u202e", "\u2066"):
        assert ch not in text, (ch, text)


@pytest.fixture
def hostile_board(tmp_path: Path) -> tuple[Path, Path, str]:
    """A commons whose name, an item's title and description, and an attestation carry escape sequences."""
    commons = tmp_path / "commons.git"
    assert run(tmp_path, "create", str(commons), "--name", f"board {ATTACK}\nfake line")[0] == 0
    home = tmp_path / "alice"
    assert run(home, "join", str(commons), "--handle", "alice", "--display-name", f"{ATTACK}\nfake line")[0] == 0
    code, out, _ = run(home, "--json", "post", "--title", ATTACK, "--description", f"first\r{ATTACK}\nsecond")
    assert code == 0
    item_id = json.loads(out)["id"]
    mallory = Mallory(commons, tmp_path / "mallory.git")
    b = item_id[2:4]
    mallory.push({
        f"attestations/{b}/{item_id}/mallory.json": mallory.file(orjson.dumps({"verdict": ATTACK})),
        f"wanted/{b}/w-{b}\x1b]0;pwned\x07\x1b[2J\r.json": mallory.file(b"{}"),  # git names hold no "/"
    })
    code, out, err = run(home, "sync")  # the hand-made commit is excluded; its report shows the names escaped
    assert code == 1 and "\\x1b]0;pwned\\x07\\x1b[2J\\r.json" in out
    no_raw_controls(out + err)
    from board.home import Home
    from board.ids import new_completion_id
    from board.service import Board

    with Board(Home(home)) as board:  # an attestation that validation accepts, carrying the attack
        board.mutate(board.new_op("claim", item_id, lease_seconds=600))
        board.mutate(board.new_op("done", item_id, evidence="e", completion_id=new_completion_id()))
        board.mutate(board.new_op("attest", item_id, record={"verdict": ATTACK}))
    return commons, home, item_id


def test_browse_show_and_doctor_show_board_strings_escaped(hostile_board: tuple[Path, Path, str]) -> None:
    _, home, item_id = hostile_board
    code, out, err = run(home, "browse", "--status", "all")
    assert code == 0 and item_id in out and "markup" in out
    no_raw_controls(out + err)

    code, out, err = run(home, "show", item_id)
    assert code == 0
    no_raw_controls(out + err)
    assert f"{item_id}  {SHOWN}" in out
    assert f"    first\\r{SHOWN}" in out and "    second" in out  # only \n breaks a line
    assert f"attestation  alice: {SHOWN}" in out

    code, out, err = run(home, "doctor")
    no_raw_controls(out + err)
    board_line = next(ln for ln in out.splitlines() if " board " in ln)
    assert "\\nfake line" in board_line and not any(ln.startswith("fake line") for ln in out.splitlines())


def test_rig_show_and_join_escape_the_display_name(hostile_board: tuple[Path, Path, str]) -> None:
    _, home, _ = hostile_board
    code, out, err = run(home, "rig", "show")
    assert code == 0 and out.splitlines()[0] == f"alice  {SHOWN}\\nfake line"
    no_raw_controls(out + err)
    code, out, _ = run(home, "--json", "rig", "show")
    assert json.loads(out)["rig"]["display_name"] == f"{ATTACK}\nfake line"


def test_json_output_keeps_the_exact_strings(hostile_board: tuple[Path, Path, str]) -> None:
    _, home, item_id = hostile_board
    code, out, _ = run(home, "--json", "show", item_id)
    doc = json.loads(out)
    assert code == 0 and doc["item"]["title"] == ATTACK
    assert doc["item"]["description"] == f"first\r{ATTACK}\nsecond"
    assert doc["attestations"]["alice"]["verdict"] == ATTACK
    assert "\x1b" not in out  # JSON escapes it: \u001b
    code, out, _ = run(home, "--json", "browse", "--status", "all")
    assert [i["title"] for i in json.loads(out)["items"]] == [ATTACK]


def _on_a_terminal(home: Path, *args: str, timeout: float = 60) -> str:
    """A real `wl` whose stdout and stderr are a pseudo-terminal, so rich styles its output as it would."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"} | {"TERM": "xterm-256color", "COLUMNS": "200"}
    proc = subprocess.Popen([WL, "--home", str(home), *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=10)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.timeout(120)
def test_a_real_terminal_gets_only_rich_own_styling(hostile_board: tuple[Path, Path, str]) -> None:
    commons, home, item_id = hostile_board
    for args in (("browse", "--status", "all"), ("show", item_id)):
        out = _on_a_terminal(home, *args)
        assert item_id in out and "[bold red]markup[/bold red]" in out, out  # markup shown, not applied
        assert "\x1b]" not in out and "\x1b[2J" not in out and "\x07" not in out  # no OSC, no clear screen
        assert "\x1b[31m" not in out and "\u202e" not in out and "\x9b" not in out
    b = item_id[2:4]
    mallory = Mallory(commons, home.parent / "mallory2.git")
    mallory.push({f"wanted/{b}/w-{b}\x1b]0;pwned\x07\x1b[2J.json": mallory.file(b"{}")})
    out = _on_a_terminal(home, "sync")  # the report of the crafted commit names the path escaped
    assert "\x1b]" not in out and "\x1b[2J" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out, out
