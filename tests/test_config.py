"""config.toml and the home: written by tomli-w, never unreadable, private whatever the umask.

`wl config set` refuses what would not read back (control characters, text that is not UTF-8) with one
`wl: error:` line and leaves the file as it was; `wl doctor` exits 1 with one line when the file cannot be
read; the home is 0700 and the files wl writes in it 0600 even under umask 000 (real `wl` processes).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remotes import WL
from test_board_cli import run

from board.errors import ConfigError
from board.home import Home
from board.text import is_clean


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def real_wl(home: Path, *args: str | bytes, umask: int = 0o022) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("WL_DEBUG", "WL_HOME")}
    return subprocess.run([WL, "--home", str(home), *args], env=env, capture_output=True, timeout=60, umask=umask)


@pytest.mark.parametrize("value", ["a\rb", "tab\there", "new\nline", "esc\x1b[2J", "bidi\u202eevil", "nul\x00"])
def test_values_that_would_not_round_trip_are_refused(tmp_path: Path, value: str) -> None:
    home = tmp_path / "home"
    assert run(home, "config", "set", "display_name", "before")[0] == 0
    before = (home / "config.toml").read_bytes()
    code, out, err = run(home, "config", "set", "display_name", value)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("wl: error: display_name may not contain control or formatting characters")
    assert "\x1b" not in err and "\r" not in err and "\u202e" not in err
    assert (home / "config.toml").read_bytes() == before
    assert run(home, "config", "get", "display_name")[1] == "before\n"


@pytest.mark.parametrize("value", ['quo"te', "back\\slash", "hash # = [x]", "'''", '"""', "café 中文 👩\u200d💻", " "])
def test_awkward_but_clean_values_read_back_exactly(tmp_path: Path, value: str) -> None:
    home = tmp_path / "home"
    assert run(home, "config", "set", "display_name", value)[0] == 0
    assert tomllib.loads((home / "config.toml").read_text("utf-8"))["display_name"] == value
    assert json.loads(run(home, "--json", "config", "get", "display_name")[1]) == {"display_name": value}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=80))
def test_whatever_set_accepts_reads_back(tmp_path: Path, value: str) -> None:
    home = Home(tmp_path / "prop")
    try:
        home.set_config("display_name", value)
    except ConfigError:
        assert not is_clean(value)  # refused only for a control/format character or a lone surrogate
        return
    assert home.load_config()["display_name"] == value


def test_undecodable_argv_is_refused_by_a_real_wl(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = real_wl(home, "config", "set", "display_name", b"caf\xff")
    assert res.returncode == 2 and res.stderr.startswith(b"wl: error: display_name is not valid UTF-8 text")
    assert not (home / "config.toml").exists()


def test_an_unreadable_config_is_one_line_everywhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "init", "--handle", "solo")[0] == 0
    (home / "config.toml").write_bytes(b'handle = "solo"\ndisplay_name = "a\rb"\n')  # what wl used to write
    code, out, err = run(home, "doctor")
    assert code == 1 and err == ""
    [line] = out.splitlines()
    assert line.startswith("✗ config") and "config.toml" in line
    code, out, _ = run(home, "--json", "doctor")
    assert code == 1 and json.loads(out)["checks"][0]["name"] == "config" and json.loads(out)["ok"] is False
    code, out, err = run(home, "browse")
    assert code == 2 and out == "" and err.startswith("wl: error:") and err.count("\n") == 1
    res = real_wl(home, "doctor")  # the real executable too: its exit status is what scripts see
    assert res.returncode == 1 and len(res.stdout.decode().splitlines()) == 1 and res.stderr == b""


def test_a_value_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "init", "--handle", "solo")[0] == 0
    with (home / "config.toml").open("a") as fh:
        fh.write('lease = "forever"\n')
    code, out, err = run(home, "claim", "w-0000000000")
    assert code == 2 and err.startswith("wl: error:") and "lease must be an integer" in err
    assert run(home, "doctor")[0] == 1


@pytest.mark.timeout(120)
def test_home_and_files_are_private_under_umask_000(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    res = real_wl(home, "init", "--handle", "solo", umask=0)
    assert res.returncode == 0, res.stderr
    assert real_wl(home, "config", "set", "display_name", "Solo", umask=0).returncode == 0
    assert real_wl(home, "post", "--title", "t", umask=0).returncode == 0
    assert real_wl(home, "browse", umask=0).returncode == 0
    assert mode_of(home) == 0o700
    for name in ("config.toml", "key", "lock", "cache/index.sqlite"):  # browse's index (board/index.py)
        assert mode_of(home / name) == 0o600, name
    assert all(mode_of(f) == 0o600 for f in (home / "cache").glob("index.sqlite*"))
    assert not list(home.glob("*.tmp")) and not list(home.glob(".config.toml.*"))


@pytest.mark.timeout(120)
def test_join_under_umask_000_and_a_loose_config_is_tightened(tmp_path: Path) -> None:
    commons = tmp_path / "commons.git"
    assert real_wl(tmp_path, "create", str(commons)).returncode == 0
    home = tmp_path / "joined"
    res = real_wl(home, "join", str(commons), "--handle", "bob", umask=0)
    assert res.returncode == 0, res.stderr
    assert mode_of(home) == 0o700 and mode_of(home / "config.toml") == 0o600
    os.chmod(home / "config.toml", 0o666)  # left by an older wl
    assert real_wl(home, "config", "set", "lease", "45", umask=0).returncode == 0
    assert mode_of(home / "config.toml") == 0o600
    assert tomllib.loads((home / "config.toml").read_text())["lease"] == 45


def test_engine_threads_leave_a_core_free_and_the_config_key_or_flag_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: threads = cores collapsed beside one busy neighbour; the default keeps one core free."""
    from wl_infer.backends import llama_engine
    from wl_infer.settings import backend_config

    for cores, expected in ((1, 1), (2, 1), (3, 2), (5, 4), (64, 4)):
        monkeypatch.setattr(llama_engine.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert llama_engine.default_threads(None) == expected, cores
    assert llama_engine.default_threads(3) == 3  # a configured count is used as given
    home = tmp_path / "home"
    assert run(home, "init", "--handle", "solo")[0] == 0
    assert run(home, "config", "set", "threads", "2")[0] == 0
    config = Home(home).load_config()
    assert backend_config(home, config).threads == 2
    assert backend_config(home, config, threads=3).threads == 3  # --threads beats the config key
    assert run(home, "config", "set", "threads", "many")[0] != 0
