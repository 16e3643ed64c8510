"""A backend from another package is posted, run and verified with real `wl` commands, no change to wl-infer.

tests/plugins/wl_echo_backend/ is a separate distribution that only declares a `wl_infer.backends` entry
point. pip installs it into a folder of its own, which the `wl` processes get on PYTHONPATH: the venv
stays as it was, so no other test sees the plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.remotes import WL

PLUGIN = Path(__file__).resolve().parent / "plugins" / "wl_echo_backend"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("echo-src") / "wl_echo_backend"
    shutil.copytree(PLUGIN, source)  # the build writes next to its sources: keep them out of the checkout
    target = tmp_path_factory.mktemp("echo-installed")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return target


class Wl:
    """The real `wl` executable for one rig, with or without the plugin on its path."""

    def __init__(self, home: Path, plugin: Path | None) -> None:
        self.home, self.plugin = home, plugin

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WL_DEBUG", "PYTHONPATH")}
        env["WL_HOME"] = str(self.home)
        if self.plugin is not None:
            env["PYTHONPATH"] = str(self.plugin)
        return subprocess.run([WL, *args], env=env, capture_output=True, text=True, timeout=120)

    def json(self, *args: str) -> tuple[int, Any]:
        done = self("--json", *args)
        return done.returncode, orjson.loads(done.stdout) if done.stdout.strip() else done.stderr


@pytest.fixture
def rigs(tmp_path: Path, plugin_path: Path) -> dict[str, Wl]:
    commons = tmp_path / "commons.git"
    rigs = {h: Wl(tmp_path / f"home-{h}", plugin_path) for h in ("alice", "bob", "carol")}
    assert rigs["alice"]("create", str(commons), "--name", "plugins").returncode == 0
    for handle, wl in rigs.items():
        done = wl("join", str(commons), "--handle", handle)
        assert done.returncode == 0, done.stderr
    return rigs


def test_a_third_party_backend_is_posted_run_and_verified(rigs: dict[str, Wl]) -> None:
    code, posted = rigs["alice"].json("infer", "post", "--backend", "echo", "--model", "echo-1",
                                      "--prompt", "one two three", "--seed", "1")  # fmt: skip
    assert code == 0, posted
    assert posted["job"]["backend"] == "echo" and posted["job"]["model_digest"].startswith("sha256:")
    assert posted["warnings"] == []  # the plugin reports the digest, so it is pinned

    code, ran = rigs["bob"].json("infer", "run", posted["id"])
    assert code == 0, ran
    assert ran["output"] == "three two one three two one"

    code, verdict = rigs["carol"].json("infer", "verify", posted["id"])
    assert code == 0, verdict
    assert verdict["verdict"] == "VERIFIED" and verdict["mode"] == "rerun" and verdict["recorded"] is True

    code, models = rigs["carol"].json("infer", "models")
    assert code == 0
    assert {"backend": "echo", "name": "echo-1"}.items() <= next(r for r in models["models"] if r["backend"] == "echo").items()


def test_without_the_plugin_its_jobs_are_refused_with_the_known_names(rigs: dict[str, Wl]) -> None:
    code, posted = rigs["alice"].json("infer", "post", "--backend", "echo", "--model", "echo-1", "--prompt", "a b")
    assert code == 0, posted
    bare = Wl(rigs["carol"].home, None)
    done = bare("infer", "post", "--backend", "echo", "--model", "echo-1", "--prompt", "x")
    assert done.returncode == 2 and "'echo' is not one of" in done.stderr and "llama-cpp" in done.stderr
    done = bare("infer", "verify", posted["id"])
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("wl: error: ") and "unknown backend 'echo' (expected one of" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
