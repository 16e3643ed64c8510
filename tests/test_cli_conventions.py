"""Issue 13's board CLI: global flags anywhere, one-line and JSON errors, `wl status`, `wl log`, completion.

CliRunner for the documents, the real `wl` executable for what a shell sees.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remotes import WL
from test_board_cli import run, run_json

from board.cli.complete import item_ids
from board.cli.main import cli
from board.ids import parse_time, utcnow


@pytest.fixture
def board(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A commons with two joined homes (alice posts, bob works)."""
    commons = tmp_path / "commons.git"
    run_json(tmp_path, "create", str(commons), "--name", "conventions")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, handle in ((alice, "alice"), (bob, "bob")):
        run_json(home, "join", str(commons), "--handle", handle)
    return commons, alice, bob


def invoke(*args: str) -> tuple[int, str, str]:
    """The CLI with exactly these arguments (no --home put first for us)."""
    result = CliRunner().invoke(cli, list(args), prog_name="wl")
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def shell(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "WL_HOME": str(home), **(env or {})}
    return subprocess.run([WL, *args], capture_output=True, text=True, env=full_env, timeout=60)


def one_json_error(stderr: str) -> dict[str, Any]:
    lines = stderr.strip().split("\n")
    assert len(lines) == 1, stderr
    doc: dict[str, Any] = json.loads(lines[0])
    assert set(doc) >= {"error", "exit_code"} and isinstance(doc["error"], str) and doc["error"]
    return doc


# --- global flags anywhere ------------------------------------------------------------------------


def test_json_and_home_after_the_command(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    item = run_json(alice, "post", "--title", "flags anywhere")["id"]
    before = run_json(alice, "show", item)
    for args in (
        ("show", item, "--json", "--home", str(alice)),
        ("show", "--home", str(alice), item, "--json"),
        ("--json", "show", item, f"--home={alice}"),
    ):
        code, out, err = invoke(*args)
        assert code == 0, err
        assert json.loads(out) == before


def test_json_after_a_plugin_subcommand(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    job = json.dumps({"prompt": "what is 1+1", "model": "gemma3:270m", "seed": 7})
    item = run_json(alice, "post", "--title", "a job", "--type", "inference", "--description", job)["id"]
    code, out, err = invoke("infer", "status", item, "--json", "--home", str(alice))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["item"]["id"] == item and doc["job"]["seed"] == 7 and doc["completion"] is None


def test_a_value_after_double_dash_is_not_a_flag(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    code, out, err = run(alice, "post", "--title", "x", "--", "--json")
    assert code == 2 and out == ""  # `--json` after `--` is an extra argument, not the global flag
    assert err.startswith("wl: error: ") and err.count("\n") == 1


# --- errors ---------------------------------------------------------------------------------------


def test_usage_errors_are_one_line_with_a_hint(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    cases = (
        (("show", "--bogus"), "No such option '--bogus'", "wl show --help"),
        (("claim",), "Missing argument 'ITEM_ID'", "wl claim --help"),
        (("claim", "w-0123456789", "--lease", "0"), "--lease", "wl claim --help"),
        (("nosuch",), "No such command 'nosuch'", "wl --help"),
        (("infer", "status"), "Missing argument", "wl infer status --help"),
    )
    for args, what, hint in cases:
        code, out, err = run(alice, *args)
        assert code == 2 and out == "", (args, out)
        assert err.count("\n") == 1 and err.startswith("wl: error: "), (args, err)
        assert what in err and f"(try '{hint}')" in err, (args, err)


def test_errors_under_json_are_one_json_object(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    code, out, err = run(alice, "show", "w-0000000000", "--json")
    assert code == 1 and out == ""
    doc = one_json_error(err)
    assert doc["exit_code"] == 1 and "w-0000000000" in doc["error"]

    code, out, err = run(alice, "--json", "claim", "w-0123456789", "--lease", "0")
    assert code == 2 and out == ""
    doc = one_json_error(err)
    assert doc["exit_code"] == 2 and "--lease" in doc["error"] and doc["hint"] == "try 'wl claim --help'"

    code, out, err = run(alice, "post", "--json")  # --title is required
    assert code == 2 and one_json_error(err)["exit_code"] == 2


def test_the_real_executable_prints_one_line_or_one_object(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    proc = shell(alice, "browse", "--bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "wl: error: No such option '--bogus'. (try 'wl browse --help')\n"

    proc = shell(alice, "infer", "status", "w-0000000000", "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert one_json_error(proc.stderr)["exit_code"] == 1

    proc = shell(alice, "--home", str(alice / "nowhere"), "browse", "--json")
    assert proc.returncode != 0 and one_json_error(proc.stderr)["exit_code"] == proc.returncode


# --- wl status ------------------------------------------------------------------------------------


def test_status_shows_counts_claims_and_what_waits(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    ids = [run_json(alice, "post", "--title", f"item {n}")["id"] for n in range(3)]
    run_json(bob, "sync")
    run_json(bob, "claim", ids[0], "--lease", "10")
    run_json(bob, "claim", ids[1])
    run_json(bob, "done", ids[1], "--evidence", "done it")
    run_json(alice, "sync")

    mine = run_json(bob, "status")
    assert mine["handle"] == "bob" and mine["total"] == 3
    assert mine["counts"]["open"] == 1 and mine["counts"]["claimed"] == 1 and mine["counts"]["in_review"] == 1
    assert [c["id"] for c in mine["my_claims"]] == [ids[0]]
    assert 500 < mine["my_claims"][0]["lease_left_seconds"] <= 600
    assert [c["id"] for c in mine["awaiting_review"]] == [ids[1]] and mine["to_review"] == []
    assert mine["pending_ops"] == 0
    assert abs((utcnow() - parse_time(mine["as_of"])).total_seconds()) < 120  # when the copy last changed

    theirs = run_json(alice, "status")
    assert [c["id"] for c in theirs["to_review"]] == [ids[1]] and theirs["to_review"][0]["claimed_by"] == "bob"
    assert theirs["my_claims"] == []

    code, out, _ = run(alice, "status")
    assert code == 0 and "3 item(s): 1 open, 1 claimed, 1 in_review" in out
    assert f"{ids[1]}  done by bob  item 1" in out and "local copy as of 20" in out and "its last change" in out

    run_json(bob, "unclaim", ids[0])
    run_json(bob, "post", "--title", "posted offline", "--no-push")
    code, out, _ = run(bob, "status")
    assert "1 local operation(s) not pushed yet" in out and "My claims" not in out
    # a claim held on its lane is released only online: offline, the command says so and changes nothing
    run_json(bob, "claim", ids[2])
    code, _, err = run(bob, "unclaim", ids[2], "--no-push")
    assert code == 2 and "lives on its claim lane" in err and err.count("\n") == 1


def test_status_sanitises_titles(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    item = run_json(alice, "post", "--title", "evil\x1b[2J\nforged line")["id"]
    run_json(bob, "sync")
    run_json(bob, "claim", item)
    code, out, _ = run(bob, "status")
    assert code == 0 and "\x1b" not in out and "\nforged line" not in out


def test_browse_says_where_the_items_are(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    ids = [run_json(alice, "post", "--title", f"item {n}")["id"] for n in range(2)]
    run_json(bob, "sync")
    for item in ids:
        run_json(bob, "claim", item)
    run_json(bob, "done", ids[0], "--evidence", "x")
    code, out, _ = run(bob, "browse")
    assert code == 0 and out.strip() == "0 of 0 item(s) (open); 1 claimed, 1 in_review — try --status all"
    code, out, _ = run(bob, "browse", "--status", "all")
    assert "2 of 2 item(s)" in out and "try" not in out


# --- wl log ---------------------------------------------------------------------------------------


def test_log_lists_an_items_history(board: tuple[Path, Path, Path]) -> None:
    commons, alice, bob = board
    item = run_json(alice, "post", "--title", "history")["id"]
    other = run_json(alice, "post", "--title", "noise")["id"]
    run_json(bob, "sync")
    run_json(bob, "claim", item, "--lease", "5")
    run_json(bob, "claim", other)
    run_json(bob, "unclaim", item)
    run_json(bob, "claim", item)
    run_json(bob, "done", item, "--evidence", "https://example.invalid/r")
    run_json(alice, "sync")
    run_json(alice, "accept", item, "--quality", "4")

    # claims and the done live on the item's lane; a fold carries the done (and the last claim it names) to
    # main, and the lane is dropped
    records = run_json(alice, "log", item[:6])
    assert [(r["op"], r["by"], r.get("lane", False)) for r in records] == [
        ("post", "alice", False), ("claim", "bob", True), ("done", "bob", False), ("accept", "alice", False),
    ]
    assert records[1]["args"]["lease_seconds"] == 1800 and records[3]["args"]["quality"] == 4
    assert records[1]["commit"] == records[2]["commit"]  # carried by the fold's commit
    assert records[2]["folded_by"] == "bob" and "folded_by" not in records[3]
    shas = subprocess.run(
        ["git", "--git-dir", str(commons), "log", "--first-parent", "--format=%H %s", "main"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    ours = [line.split()[0] for line in shas if f" {item} " in line or " wl: fold by " in line]
    assert list(dict.fromkeys(r["commit"] for r in records)) == list(reversed(ours))  # the item's commits
    assert records == sorted(records, key=lambda r: r["at"])

    code, out, _ = run(alice, "log", item)
    lines = out.strip().split("\n")
    assert len(lines) == 4 and lines[0].startswith(records[0]["commit"][:7]) and "(on its claim lane)" in lines[1]
    assert "post" in lines[0] and "title=history" in lines[0] and "quality=4" in lines[3]
    live = run_json(alice, "log", other)  # a claim still on its lane is part of the item's history
    assert [(r["op"], r["by"], r.get("lane", False)) for r in live] == [("post", "alice", False), ("claim", "bob", True)]


def test_log_sanitises_and_refuses_unknown_ids(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    item = run_json(alice, "post", "--title", "bad\x1b]0;pwned\x07 title")["id"]
    code, out, _ = run(alice, "log", item)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "title=bad" in out
    code, out, err = run(alice, "log", "w-ffffffffff")
    assert code == 1 and out == "" and err.startswith("wl: error: ") and err.count("\n") == 1


# --- completion -----------------------------------------------------------------------------------


def test_item_ids_complete_from_the_local_board(board: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, alice, _ = board
    ids = [run_json(alice, "post", "--title", f"c{n}\x1b[31m")["id"] for n in range(3)]
    got = item_ids(alice, "")
    assert sorted(c.value for c in got) == sorted(ids)
    assert all("\x1b" not in (c.help or "") and c.help.startswith("[open] c") for c in got)
    assert [c.value for c in item_ids(alice, ids[0][:6])] == [i for i in ids if i.startswith(ids[0][:6])]
    assert [c.value for c in item_ids(alice, ids[1][2:7])] == [i for i in ids if i[2:].startswith(ids[1][2:7])]
    assert item_ids(alice, "zz") == [] and item_ids(tmp_path / "no-home", "") == []


def test_completion_through_clicks_env_protocol(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    item = run_json(alice, "post", "--title", "complete me")["id"]
    env = {"_WL_COMPLETE": "bash_complete", "COMP_WORDS": f"wl --home {alice} claim w-", "COMP_CWORD": "4"}
    result = CliRunner().invoke(cli, [], prog_name="wl", env=env)
    assert result.exit_code == 0 and result.stdout.split() == [f"plain,{item}"]
    env["COMP_WORDS"] = f"wl log --json --home {alice} {item[:5]}"  # the global flags after the command count
    env["COMP_CWORD"] = "5"
    result = CliRunner().invoke(cli, [], prog_name="wl", env=env)
    assert result.stdout.split() == [f"plain,{item}"]


@pytest.mark.parametrize("words", ["infer status", "infer run", "infer verify", "infer anchor", "chain attest",
                                   "chain assign", "chain refund", "chain withdraw"])
def test_infer_and_chain_commands_complete_item_ids(board: tuple[Path, Path, Path], words: str) -> None:
    _, alice, _ = board
    job = run_json(alice, "post", "--title", "an inference job", "--type", "inference")["id"]
    other = run_json(alice, "post", "--title", "another")["id"]
    line = f"wl {words} --home {alice} w-"
    env = {"_WL_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)}
    result = CliRunner().invoke(cli, [], prog_name="wl", env=env)
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == sorted([f"plain,{job}", f"plain,{other}"])
    env["COMP_WORDS"] = f"wl {words} --home {alice} {job[:6]}"  # a prefix narrows it
    result = CliRunner().invoke(cli, [], prog_name="wl", env=env)
    assert result.stdout.split() == [f"plain,{job}"] or job[:6] == other[:6]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_ids_with_the_documented_script(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    item = run_json(alice, "post", "--title", "in bash")["id"]
    script = (
        'eval "$(_WL_COMPLETE=bash_source wl)"; COMP_WORDS=(wl show w-); COMP_CWORD=2; _wl_completion wl; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "WL_HOME": str(alice), "PATH": f"{Path(WL).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [item]
    assert re.fullmatch(r"w-[0-9a-f]{10}", item)


def test_a_bare_group_shows_its_help_and_json_asks_for_a_command(tmp_path: Path) -> None:
    code, out, err = invoke("infer")
    assert code == 2 and "Usage: wl infer" in out + err and "Commands:" in out + err
    code, out, err = invoke("infer", "--json")
    assert code == 2 and out == ""
    assert one_json_error(err) == {"error": "missing command", "exit_code": 2, "hint": "try 'wl infer --help'"}
    code, out, _ = invoke("--version")
    assert code == 0 and out.startswith("wl, version ")


def test_a_trailing_home_without_its_value_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = invoke("show", "w-0123456789", "--home")
    assert code == 2 and out == "" and err == "wl: error: Option '--home' requires an argument.\n"
    code, out, err = invoke("show", "w-0123456789", "--json", "--home")
    assert code == 2 and out == "" and one_json_error(err)["exit_code"] == 2


def test_log_reads_a_hostile_history_without_tripping(board: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Commits pushed with git itself: a trailer that does not parse, a forged handle, escapes in the arguments."""
    commons, alice, _ = board
    item = run_json(alice, "post", "--title", "target")["id"]
    clone = tmp_path / "mallory.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(commons), str(clone)], check=True, timeout=60)
    env = {**os.environ, "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@example.invalid",
           "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@example.invalid"}
    evil = json.dumps({"op": "reject", "by": "mallory", "at": "2026-01-01T00:00:00Z", "id": item,
                       "args": {"reason": "\x1b]0;owned\x07\x1b[2Jgone\nfake line"}})
    messages = (
        f"wl: claim {item} by x\n\nWl-Op: {{not json",
        f"wl: claim {item} by x\n\nWl-Op: " + json.dumps({"op": "claim", "by": "Bad\x1bHandle", "at": "x", "id": item}),
        f"wl: reject {item} by mallory\n\nWl-Op: {evil}",
    )
    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(clone), *args], capture_output=True, text=True,
                              env=env, check=True, timeout=60).stdout.strip()

    for message in messages:
        sha = git("commit-tree", "main^{tree}", "-p", "main", "-m", message)
        git("update-ref", "refs/heads/main", sha)
    subprocess.run(["git", "--git-dir", str(clone), "push", "--quiet", "origin", "main"], check=True, timeout=60)
    code, _, err = run(alice, "sync")
    assert code == 1 and "invalid commit" in err  # the ledger refuses them; `wl log` must still read the history

    records = run_json(alice, "log", item)
    assert [(r["op"], r["by"]) for r in records] == [("post", "alice"), ("reject", "mallory")]  # as recorded
    assert records[0]["refused"] is None
    assert records[1]["refused"] == "its message is not a signed wl operation (summary, Wl-Op and Wl-Sig lines)"
    code, out, err = run(alice, "log", item)
    assert code == 0 and "Traceback" not in err
    assert "\x1b" not in out and "\x07" not in out and "\nfake line" not in out and len(out.strip().split("\n")) == 2
    assert "✗ refused by the ledger: its message is not a signed wl operation" in out.strip().split("\n")[1]
    assert "refused" not in out.strip().split("\n")[0]
    # after a healthy commit the ledger no longer lists it, but an unsigned commit is still marked
    assert run(alice, "claim", item)[0] == 0
    records = run_json(alice, "log", item)
    assert [(r["op"], r["by"], bool(r["refused"])) for r in records] == [
        ("post", "alice", False), ("reject", "mallory", True), ("claim", "alice", False)]
    assert "not a signed wl operation" in records[1]["refused"]
