"""The `wl` command line: every command's --json document, exit codes, one-line errors, commit messages,
`wl doctor`, and a few runs of the real executable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remotes import WL, Rig, make_commons, remote_ops

from board.cli.main import cli
from board.ids import parse_time

SUBJECT = re.compile(r"wl: (?P<op>[a-z-]+)(?: (?P<id>w-[0-9a-f]{10}))? by (?P<by>[a-z0-9][a-z0-9_-]*)")


def run(home: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], input=input)
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_json(home: Path, *args: str) -> Any:
    code, out, err = run(home, "--json", *args)
    assert code == 0, (args, err)
    return json.loads(out)  # exactly one JSON document, nothing else on stdout


@pytest.fixture
def board(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A commons with two joined homes (alice posts, bob works)."""
    commons = tmp_path / "commons.git"
    doc = run_json(tmp_path, "create", str(commons), "--name", "cli board")
    assert doc["ok"] and re.fullmatch(r"[0-9a-f]{16}", doc["board_id"])
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, handle in ((alice, "alice"), (bob, "bob")):
        doc = run_json(home, "join", str(commons), "--handle", handle)
        assert doc["handle"] == handle and doc["pushed"] is True and doc["already_registered"] is False
        assert re.fullmatch(r"0x[0-9a-fA-F]{40}", doc["address"])
    return commons, alice, bob


def test_every_command_prints_one_json_document(board: tuple[Path, Path, Path]) -> None:
    commons, alice, bob = board
    posted = run_json(
        alice, "post", "--title", "json all the way", "--type", "bug", "--priority", "1", "--tag", "x"
    )
    item_id = posted["id"]
    assert posted["ok"] and posted["op"] == "post" and posted["pushed"] is True
    assert posted["result"]["type"] == "bug" and posted["result"]["tags"] == ["x"]

    assert run_json(bob, "browse")["items"] == []  # browse reads the local copy...
    run_json(bob, "sync")  # ...which sync refreshes
    listing = run_json(bob, "browse")
    assert (
        [i["id"] for i in listing["items"]] == [item_id]
        and listing["total"] == 1
        and listing["corrupt"] == []
    )
    shown = run_json(bob, "show", item_id[2:6])
    assert shown["item"]["id"] == item_id and shown["completion"] is None and shown["attestations"] == {}

    assert run_json(bob, "claim", item_id, "--lease", "10")["result"]["claimed_by"] == "bob"
    assert run_json(bob, "unclaim", item_id)["result"]["status"] == "open"
    run_json(bob, "claim", item_id)
    done = run_json(bob, "done", item_id, "--evidence", "https://example.invalid/1")
    assert done["result"]["completion"]["evidence"] == "https://example.invalid/1"
    assert run_json(alice, "reject", item_id, "--reason", "no tests")["result"]["status"] == "claimed"
    run_json(bob, "done", item_id, "--evidence", "with tests")
    accepted = run_json(
        alice, "accept", item_id, "--quality", "5", "--reliability", "4", "--severity", "root"
    )
    assert accepted["result"]["status"] == "completed"
    shown = run_json(alice, "show", item_id)
    assert shown["completion"]["stamp"]["quality"] == 5 and shown["completion"]["stamp"]["severity"] == "root"

    second = run_json(alice, "post", "--title", "to close")["id"]
    run_json(bob, "claim", second)
    run_json(bob, "done", second, "--evidence", "e")
    assert run_json(alice, "close", second)["result"]["status"] == "completed"
    third = run_json(alice, "post", "--title", "to withdraw")["id"]
    assert run_json(alice, "delete", third)["result"]["status"] == "withdrawn"

    assert run_json(bob, "sync")["ok"] is True
    assert run_json(bob, "config", "set", "lease", "45") == {"ok": True, "lease": 45}
    assert run_json(bob, "config", "get", "lease") == {"lease": 45}
    assert run_json(bob, "config", "list")["handle"] == "bob"
    doctor = run_json(bob, "doctor")
    assert {c["name"] for c in doctor["checks"]} >= {
        "home",
        "config",
        "key file",
        "board",
        "registered",
        "remote",
    }
    assert run_json(bob, "browse", "--status", "all")["total"] == 3
    doc = run_json(bob.parent / "solo", "init", "--handle", "solo")
    assert doc["ok"] and doc["handle"] == "solo"


def test_every_commit_names_its_op_and_carries_a_parsable_trailer(board: tuple[Path, Path, Path]) -> None:
    commons, alice, bob = board
    item_id = run_json(alice, "post", "--title", "audited")["id"]
    for home, args in (
        (bob, ["claim", item_id]),
        (bob, ["done", item_id, "--evidence", "e"]),
        (alice, ["accept", item_id, "--quality", "3"]),
    ):
        run_json(home, *args)
    history = remote_ops(commons)
    assert history[0][0].startswith("wl: create board ")
    seen = []
    for message, op in history[1:]:
        subject = message.split("\n")[0]
        m = SUBJECT.fullmatch(subject)
        assert m, subject
        assert op is not None, message
        assert (op.op, op.id, op.by) == (m["op"], m["id"], m["by"])
        lines = message.rstrip("\n").split("\n")
        assert lines[-2].startswith("Wl-Op: {") and re.fullmatch(r"Wl-Sig: 0x[0-9a-f]{130}", lines[-1])
        seen.append(subject)
    assert seen == [
        "wl: join by alice",
        "wl: join by bob",
        f"wl: post {item_id} by alice",
        "wl: fold by bob",  # bob's claim and done lived on the item's lane; his fold carries them to main
        f"wl: accept {item_id} by alice",
    ]
    fold = next(op for _, op in history if op is not None and op.op == "fold")
    [entry] = fold.args["results"]
    done = json.loads(entry["op"])
    assert (done["op"], done["id"], done["by"]) == ("done", item_id, "bob") and entry["sig"].startswith("0x")
    assert json.loads(done["args"]["lane"]["op"])["op"] == "claim" and done["args"]["lane"]["sig"].startswith("0x")


def test_browse_filters(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    ids = {}
    for title, kind, prio in (("a", "bug", 3), ("b", "docs", 0), ("c", "bug", 1)):
        ids[title] = run_json(alice, "post", "--title", title, "--type", kind, "--priority", str(prio))["id"]
    run_json(bob, "claim", ids["c"])
    run_json(bob, "sync")
    assert [i["title"] for i in run_json(bob, "browse")["items"]] == ["b", "a"]  # open, by priority
    assert [i["title"] for i in run_json(bob, "browse", "--status", "all")["items"]] == ["b", "c", "a"]
    assert [i["title"] for i in run_json(bob, "browse", "--type", "bug", "--status", "all")["items"]] == [
        "c",
        "a",
    ]
    assert [i["title"] for i in run_json(bob, "browse", "--mine", "--status", "all")["items"]] == ["c"]
    limited = run_json(bob, "browse", "--limit", "1", "--status", "all")
    assert limited["total"] == 3 and len(limited["items"]) == 1
    code, out, _ = run(bob, "browse", "--status", "all")
    assert code == 0 and "3 of 3 item(s)" in out and ids["a"] in out and "bob" in out


def test_human_output_of_show(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    item_id = run_json(
        alice, "post", "--title", "[bold]not markup[/]", "--description", "line one\nline two"
    )["id"]
    run_json(bob, "sync")
    code, out, _ = run(bob, "show", item_id)
    assert code == 0
    assert f"{item_id}  [bold]not markup[/]" in out  # board text is printed, never interpreted
    assert "status       open" in out and "posted by    alice" in out and "line two" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "../x"], 2, "wl: error: invalid wanted item id '../x'\n"),
        (["claim", "w-$(x)"], 2, "wl: error: invalid wanted item id 'w-$(x)'\n"),
        (["show", "w-0123456789"], 1, 'wl: error: no wanted item matching "w-0123456789"\n'),
        (["config", "get", "colour"], 2, "wl: error: unknown config key 'colour'"),
        (["config", "set", "lease", "soon"], 2, "wl: error: lease must be an integer\n"),
        (["join", "/nonexistent/x.git", "--handle", "bob"], 2, "wl: error: "),  # this home already holds one
        (["post", "--title", "x", "--priority", "9"], 2, ""),
        (["post"], 2, ""),
        (["frobnicate"], 2, ""),
    ],
)
def test_errors_and_exit_codes(
    board: tuple[Path, Path, Path], args: list[str], code: int, message: str
) -> None:
    _, alice, _ = board
    got, out, err = run(alice, *args)
    assert got == code, (out, err)
    assert err.startswith(message)
    if message:
        assert err.count("\n") == 1


def test_commands_without_a_board(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    code, _, err = run(home, "browse")
    assert code == 1 and err == f"wl: error: no board in {home} (run wl init, or wl join URL --handle H)\n"
    code, _, err = run(home, "claim", "w-0123456789")
    assert code == 1 and err.startswith("wl: error: no board in")
    code, _, err = run(home, "join", str(tmp_path / "nowhere.git"), "--handle", "x")
    assert code == 1 and err.startswith("wl: error: remote ") and err.count("\n") == 1
    assert not (home / "board.git").exists()  # a failed join leaves no half-made clone
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file").write_text("x")
    code, _, err = run(home, "create", str(tmp_path / "occupied"))
    assert code == 2 and "already exists and is not empty" in err


def test_handle_taken_by_another_key_is_refused(board: tuple[Path, Path, Path], tmp_path: Path) -> None:
    commons, alice, _ = board
    impostor = tmp_path / "impostor"
    code, _, err = run(impostor, "join", str(commons), "--handle", "alice")
    assert code == 1 and err.startswith(
        "wl: error: handle 'alice' is already registered with another key (0x"
    )
    # the refused home is not left acting as alice...
    code, _, err = run(impostor, "post", "--title", "as alice?")
    assert code == 1 and err.startswith("wl: error: no board in")
    # ...and can still join under a handle of its own
    assert run_json(impostor, "join", str(commons), "--handle", "mallory")["handle"] == "mallory"
    assert [op.by for _, op in remote_ops(commons) if op is not None and op.op == "post"] == []
    # joining again from the rightful home is harmless
    doc = run_json(alice, "join", str(commons), "--handle", "alice")
    assert doc["already_registered"] is True
    assert sum(1 for m, _ in remote_ops(commons) if m.startswith("wl: join by alice")) == 1


def test_config_lease_is_the_default_for_claims(board: tuple[Path, Path, Path]) -> None:
    _, alice, bob = board
    item_id = run_json(alice, "post", "--title", "leasy")["id"]
    run_json(bob, "config", "set", "lease", "7")
    res = run_json(bob, "claim", item_id)
    expires = parse_time(res["result"]["claim_expires_at"])
    updated = parse_time(res["result"]["updated_at"])
    assert (expires - updated).total_seconds() == 7 * 60


def test_home_flag_beats_the_environment(board: tuple[Path, Path, Path], wl_home: Path) -> None:
    _, alice, _ = board
    assert os.environ["WL_HOME"] == str(wl_home)
    result = CliRunner().invoke(cli, ["--json", "config", "get", "handle"])
    assert json.loads(result.stdout) == {"handle": None}  # the (empty) WL_HOME
    assert run_json(alice, "config", "get", "handle") == {"handle": "alice"}


def test_doctor_reports_a_readable_key(board: tuple[Path, Path, Path]) -> None:
    _, alice, _ = board
    key = alice / "key"
    assert key.stat().st_mode & 0o777 == 0o600
    doc = run_json(alice, "doctor")
    check = next(c for c in doc["checks"] if c["name"] == "key file")
    assert check["ok"] is True and "mode 600" in check["detail"]

    key.chmod(0o644)
    code, out, _ = run(alice, "--json", "doctor")
    doc = json.loads(out)
    check = next(c for c in doc["checks"] if c["name"] == "key file")
    assert code == 1 and doc["ok"] is False
    assert check["ok"] is False and "mode 644" in check["detail"] and "chmod 600" in check["detail"]
    code, out, _ = run(alice, "doctor")
    line = next(ln for ln in out.splitlines() if "key file" in ln)
    assert line.startswith("✗") and "mode 644 (run chmod 600)" in line


def test_doctor_reports_pending_work_and_an_unreachable_remote(board: tuple[Path, Path, Path]) -> None:
    commons, alice, _ = board
    run_json(alice, "post", "--title", "offline", "--no-push")
    commons.rename(commons.with_name("gone.git"))
    code, out, _ = run(alice, "--json", "doctor")
    doc = json.loads(out)
    assert code == 1  # a board check failed: automation can tell
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["pending"]["detail"] == "1 local operation(s) not yet pushed"
    assert checks["remote"]["ok"] is False and str(commons) in checks["remote"]["detail"]


# --- the real executable ----------------------------------------------------------------------------------
def wl_proc(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WL_HOME": str(home)}
    env.pop("WL_DEBUG", None)
    return subprocess.run([WL, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_real_executable_json_and_errors(tmp_path: Path) -> None:
    commons = make_commons(tmp_path)
    home = tmp_path / "proc-home"
    for args in (
        ["--json", "join", str(commons), "--handle", "carol"],
        ["--json", "post", "--title", "from a process"],
        ["--json", "browse"],
        ["--json", "doctor"],
        ["--json", "sync"],
    ):
        p = wl_proc(home, *args)
        assert p.returncode == 0, p.stderr
        json.loads(p.stdout)
        assert "Traceback" not in p.stderr
    item_id = json.loads(wl_proc(home, "--json", "browse").stdout)["items"][0]["id"]
    p = wl_proc(home, "--json", "show", item_id)
    assert json.loads(p.stdout)["item"]["title"] == "from a process"

    p = wl_proc(home, "show", "../x")
    assert (p.returncode, p.stdout, p.stderr) == (2, "", "wl: error: invalid wanted item id '../x'\n")
    p = wl_proc(home, "claim", "w-ffffffffff")
    assert p.returncode == 1 and p.stderr == 'wl: error: no wanted item matching "w-ffffffffff"\n'
    p = wl_proc(home, "--help")
    assert p.returncode == 0
    for name in ("claim", "browse", "sync", "doctor", "join"):
        assert re.search(rf"^\s+{name}\s", p.stdout, re.M), name
    p = wl_proc(home, "nope")
    assert p.returncode == 2 and "Traceback" not in p.stderr


@pytest.mark.timeout(120)
def test_real_executable_race_loser_message(tmp_path: Path) -> None:
    """Human output of a lost claim, as a user sees it (the race itself is in test_board_race)."""
    commons = make_commons(tmp_path)
    a, b = Rig(tmp_path / "a", "ann"), Rig(tmp_path / "b", "ben")
    for rig in (a, b):
        assert rig.wl("join", str(commons), "--handle", rig.handle).returncode == 0
    item_id = json.loads(a.wl("--json", "post", "--title", "t").stdout)["id"]
    assert a.wl("claim", item_id).returncode == 0
    p = b.wl("claim", item_id)
    assert p.returncode == 1
    assert p.stderr.startswith(
        f'wl: error: wanted item {item_id} has status "claimed", expected "open" (claimed by ann'
    )
    assert p.stdout == ""


def test_doctor_shows_optional_backends_as_absent_not_failed(board: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ollama server, no OpenAI-compatible server and no vLLM here: each is absent, and doctor still exits 0."""
    _, alice, _ = board
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens on the discard port
    code, out, _ = run(alice, "--json", "doctor")
    doc = json.loads(out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert code == 0 and doc["ok"] is True
    for name in ("backend ollama", "backend openai", "backend vllm"):
        assert checks[name]["ok"] is None and checks[name]["absent"] is True, checks[name]
    code, out, _ = run(alice, "doctor")
    line = next(ln for ln in out.splitlines() if "backend vllm" in ln)
    assert line.startswith("–") and line.endswith("(absent)")
