"""`wl demo`, the README's first set-up line, as a new user runs it: the whole post → run → verify story on the
embedded model, in a real `wl` process, offline."""

from __future__ import annotations

import os
import subprocess

import pytest
from remotes import WL


@pytest.mark.timeout(300)
def test_wl_demo_runs_the_whole_story_and_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WL_DEBUG", "OLLAMA_HOST", "WL_OPENAI_BASE_URL")}
    p = subprocess.run([WL, "demo"], capture_output=True, text=True, env=env, timeout=280)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = p.stdout
    for step in ("Create a commons", "Join three rigs", "posts an inference job", "bob claims and runs it",
                 "carol verifies it", "carol also regenerates it"):
        assert step in out, out
    assert "wl: error" not in out + p.stderr and "Traceback" not in p.stderr
