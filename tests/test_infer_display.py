"""`wl infer status` shows board strings sanitised: a hostile prompt or output cannot drive the terminal.

The Ollama server cannot be installed here: the ollama backend runs against a small HTTP server on 127.0.0.1
that speaks Ollama's API (tests/fake_servers.py); the board and the CLI are real.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from fake_servers import FakeOllama
from infer_helpers import make_rigs, post

MODEL = "llama3.2:1b"


def test_status_escapes_control_characters_in_prompt_and_output(tmp_path: Path) -> None:
    hostile = "\x1b]0;owned\x07\x1b[2Jhi\rthere\nsecond"
    with FakeOllama(models={MODEL: {}}) as ollama:  # its output is the prompt reversed (tests/fake_servers.py)
        rigs = make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})
        iid = post(rigs, "alice", "--prompt", hostile, "--model", MODEL)
        assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
        res = rigs.wl("carol", "infer", "status", iid)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\r" not in res.stdout and "\x07" not in res.stdout
    assert "  Prompt:   \\x1b]0;owned\\x07\\x1b[2Jhi\\rthere\n            second" in res.stdout  # lines kept, indented
    assert "  Output:   dnoces\n            ereht\\rihJ2[\\x1b" in res.stdout  # the output: indented, escaped
    code, data = rigs.wl_json("carol", "infer", "status", iid)
    assert code == 0 and data["job"]["prompt"] == hostile  # --json keeps the exact strings
    assert orjson.loads(orjson.dumps(data))["evidence"]["output"].startswith(hostile[::-1])
