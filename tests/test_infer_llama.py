"""post → run → verify with the real llama.cpp engine on the real embedded model (gemma3:270m)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from infer_helpers import Rigs, make_rigs, post, run_with_tty_stderr

from board.keys import load_private_key
from wl_infer.codec import Evidence, output_hash
from wl_infer.signing import sign_record

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

JOB = ("--prompt", "Question: What is 2+2?\nAnswer:", "--model", "gemma3:270m", "--backend", "llama-cpp",
       "--max-tokens", "8")


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob", "carol", "dave"))


def _evidence(rigs: Rigs, handle: str, item_id: str) -> Evidence:
    with rigs.board(handle) as b:
        b.refresh()
        comp = b.view().completion(item_id)
        assert comp is not None
        return Evidence.decode(comp.evidence)


def test_post_run_verify_across_three_homes(rigs: Rigs) -> None:
    iid = post(rigs, "alice", *JOB)
    item = rigs.item("alice", iid)
    assert orjson.loads(item.description)["model_digest"] == (
        "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )
    run = rigs.wl("bob", "infer", "run", iid)
    assert run.exit_code == 0, run.output
    ev = _evidence(rigs, "carol", iid)
    assert ev.tokens and len(ev.tokens) <= 8 and output_hash(ev.output or "") == ev.output_hash
    env = ev.envelope or {}
    assert env["backend"] == "llama-cpp" and env["model_digest"] == orjson.loads(item.description)["model_digest"]
    assert env["sampling"]["seed"] == 42 and env["runtime"]["prompt_cache"] is False
    for mode in ("prefill", "rerun"):
        res = rigs.wl("carol", "infer", "verify", iid, "--mode", mode)
        assert res.exit_code == 0, res.output
        assert "✓ VERIFIED — hashes match" in res.stdout and f"Mode:     {mode}" in res.stdout
        assert "envelopes differ" not in res.stdout  # same machine, same settings
    with rigs.board("alice") as b:
        b.refresh()
        assert b.view().attestations(iid)["carol"]["mode"] == "rerun"


def test_the_same_job_in_two_homes_gives_identical_hashes(rigs: Rigs) -> None:
    first = post(rigs, "alice", *JOB)
    second = post(rigs, "alice", *JOB)
    assert rigs.wl("bob", "infer", "run", first).exit_code == 0
    assert rigs.wl("dave", "infer", "run", second).exit_code == 0
    a, b = _evidence(rigs, "carol", first), _evidence(rigs, "carol", second)
    assert a.output_hash == b.output_hash and a.tokens == b.tokens and a.worker != b.worker


def _resubmit(rigs: Rigs, handle: str, item_id: str, record: dict[str, object], sign: bool) -> None:
    assert rigs.wl("alice", "reject", item_id).exit_code == 0  # back to its claimer
    if sign:
        with rigs.board(handle) as b:
            context = {"board_id": b.meta()["board_id"], "item_id": item_id}
        record = {k: v for k, v in record.items() if k != "signature"}
        record["signature"] = sign_record("evidence", record, context, load_private_key(rigs.home(handle)))
    res = rigs.wl(handle, "done", item_id, "--evidence", orjson.dumps(record).decode())
    assert res.exit_code == 0, res.output


def test_evidence_whose_output_was_edited_is_invalid(rigs: Rigs) -> None:
    iid = post(rigs, "alice", *JOB)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    ev = _evidence(rigs, "bob", iid).to_dict()
    ev["output"] = ev["output"] + " (edited)"
    _resubmit(rigs, "bob", iid, ev, sign=True)
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 1
    assert "✗ INVALID" in res.stdout and "does not hash" in res.stdout


def test_a_consistently_rewritten_output_is_a_mismatch(rigs: Rigs) -> None:
    iid = post(rigs, "alice", *JOB)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    honest = _evidence(rigs, "bob", iid)
    lie = dict(honest.to_dict(), output="The answer is 2.", output_hash=output_hash("The answer is 2."))
    lie.pop("tokens")  # a liar without tokens is checked by regeneration
    _resubmit(rigs, "bob", iid, lie, sign=True)
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 1
    assert "✗ MISMATCH — hashes differ" in res.stdout
    assert f"Actual:   {honest.output_hash}" in res.stdout


def test_a_worker_with_other_weights_refuses_before_claiming(rigs: Rigs) -> None:
    code, data = rigs.wl_json(
        "alice", "post", "--title", "infer: pinned elsewhere", "--type", "inference", "--description",
        orjson.dumps({"prompt": "hi", "model": "gemma3:270m", "seed": 42, "max_tokens": 4, "backend": "llama-cpp",
                      "model_digest": "sha256:" + "0" * 64}).decode(),
    )
    res = rigs.wl("bob", "infer", "run", data["id"])
    assert res.exit_code == 1 and "pins sha256:000" in res.stderr
    assert "released" not in res.stderr  # pre-flight (issue 10): nothing was claimed, nothing to give back
    assert rigs.item("alice", data["id"]).status == "open"


def test_run_shows_live_token_counts_on_a_terminal_and_nothing_when_piped(rigs: Rigs) -> None:
    import os
    import subprocess
    import sys

    first, second = post(rigs, "alice", *JOB), post(rigs, "alice", *JOB[:-1], "6")
    home = str(rigs.home("bob"))
    code, out, shown = run_with_tty_stderr(["--home", home, "infer", "run", first], {})
    assert code == 0, shown.decode(errors="replace")
    assert b"Generating" in shown and b"tokens" in shown and b"tok/s" in shown
    assert out.decode().startswith(f"\u2713 Inference completed for {first}") and b"\x1b" not in out
    piped = subprocess.run([str(Path(sys.executable).with_name("wl")), "--home", home, "infer", "run", second],
                           capture_output=True, timeout=300, env=os.environ)  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr
    assert b"\x1b" not in piped.stdout and b"\r" not in piped.stdout
