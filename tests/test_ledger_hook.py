"""`wl hook install`: a bare commons that runs the ledger's validation as a pre-receive hook refuses an invalid
raw push, on a real `git daemon` and on git's own `git http-backend` behind a local CGI server, and still
takes every honest rig's push."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from remotes import (
    git,
    join_rig,
    make_commons,
    remote_head,
    remote_item,
    running_git_daemon,
    running_git_http_backend,
)

from board.cli.main import cli


@pytest.fixture(params=["daemon", "http-backend"])
def hooked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    base = tmp_path / "srv"
    commons = make_commons(base)
    result = CliRunner().invoke(cli, ["hook", "install", str(commons)])
    assert result.exit_code == 0, result.output
    assert (commons / "hooks" / "pre-receive").stat().st_mode & 0o111
    if request.param == "daemon":
        with running_git_daemon(base) as daemon:
            yield commons, daemon.url("commons.git")
    else:
        with running_git_http_backend(base) as server:
            yield commons, server.url("commons.git")


def test_the_hook_refuses_a_raw_push_and_takes_honest_ones(hooked: tuple[Path, str], tmp_path: Path) -> None:
    commons, url = hooked
    alice = join_rig(tmp_path, url, "alice")
    item = alice.post("behind a hook")
    assert remote_item(commons, item).posted_by == "alice"
    work = tmp_path / "mallory"
    git("clone", "-q", url, str(work))
    rig = json.loads((work / "rigs/alice.json").read_text())
    rig["address"] = "0x" + "66" * 20
    (work / "rigs/alice.json").write_text(json.dumps(rig, indent=2, sort_keys=True) + "\n")
    git("commit", "-q", "-am", "swap", cwd=work)
    before = remote_head(commons)
    push = git("push", "origin", "HEAD:main", cwd=work, check=False)
    assert push.returncode != 0
    refusal = [line for line in push.stderr.splitlines() if "wl: push refused:" in line]
    assert len(refusal) == 1 and "not a signed wl operation" in refusal[0] and "rigs/alice.json" in refusal[0]
    assert remote_head(commons) == before
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    forced = git("push", "--force", "origin", f"{before.decode()}~1:main", cwd=work, check=False)
    assert forced.returncode != 0 and "history rewrite" in forced.stderr
    alice.claim(item)  # honest work still lands
    assert remote_item(commons, item).claimed_by == "alice"


def test_install_refuses_what_is_not_a_bare_repo_and_a_foreign_hook(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["hook", "install", str(tmp_path)])
    assert result.exit_code == 2 and "not a bare git repository" in result.output
    commons = make_commons(tmp_path)
    (commons / "hooks").mkdir(exist_ok=True)
    (commons / "hooks" / "pre-receive").write_text("#!/bin/sh\nexit 0\n")
    result = CliRunner().invoke(cli, ["hook", "install", str(commons)])
    assert result.exit_code == 2 and "--force" in result.output


def test_a_push_the_servers_hook_declines_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """A declined push is the server's verdict, not a lost race: no thirty retries, one line naming it."""
    import time

    from board.errors import RemoteError

    base = tmp_path / "srv"
    commons = make_commons(base)
    with running_git_daemon(base) as daemon:
        alice = join_rig(tmp_path, daemon.url("commons.git"), "alice")
        hook = commons / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text("#!/bin/sh\necho 'wl: push refused: closed for maintenance' >&2\nexit 1\n")
        hook.chmod(0o755)
        started = time.monotonic()
        with pytest.raises(RemoteError, match="refused the push"):
            alice.post("declined")
        assert time.monotonic() - started < 5
