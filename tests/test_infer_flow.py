"""The anchor's infer behaviours, end to end through `wl infer`, on the ollama backend.

The Ollama server cannot be installed here; these tests run the ollama backend against a small HTTP server on
127.0.0.1 that speaks Ollama's API (tests/fake_servers.py). Everything else is real: a bare git commons on
disk, three homes with their own keys, signed evidence and attestations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fake_servers import FakeOllama, free_port
from infer_helpers import Rigs, make_rigs, post

from board.keys import load_private_key
from wl_infer.codec import Evidence, output_hash
from wl_infer.signing import sign_record

MODEL = "llama3.2:1b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


def _evidence(rigs: Rigs, item_id: str) -> Evidence:
    with rigs.board("carol") as b:
        b.refresh()
        comp = b.view().completion(item_id)
        assert comp is not None
        return Evidence.decode(comp.evidence)


def test_run_on_open_item_ends_in_review_with_decodable_evidence(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL, "--max-tokens", "16")
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 0, res.output
    assert f"✓ Inference completed for {iid}" in res.stdout
    assert f"Next: wl infer verify {iid}" in res.stdout
    item = rigs.item("alice", iid)
    assert item.status == "in_review" and item.claimed_by == "bob"
    ev = _evidence(rigs, iid)
    assert ev.output is not None and output_hash(ev.output) == ev.output_hash
    assert (ev.model, ev.seed, ev.backend, ev.worker) == (MODEL, 42, "ollama", "bob")
    assert ev.signature and ev.envelope and ev.envelope["model"] == MODEL
    assert item.evidence_url == ev.encode()  # stored in evidence_url as the anchor does


def test_post_prints_the_anchor_texts_and_pins_the_digest(rigs: Rigs, ollama: FakeOllama) -> None:
    res = rigs.wl("alice", "infer", "post", "--prompt", "p" * 70, "--model", MODEL)
    assert res.exit_code == 0, res.output
    assert "✓ Posted inference job: w-" in res.stdout
    for line in ("Model: ", "Seed: 42", "Prompt: ", "Next: wl infer run w-"):
        assert line in res.stdout
    iid = res.stdout.split("Posted inference job: ")[1].split()[0]
    item = rigs.item("alice", iid)
    assert item.title == "infer: " + "p" * 57 + "..."
    assert (item.type, item.priority, item.effort_level) == ("inference", 2, "small")
    job = orjson.loads(item.description)
    assert job["model_digest"].startswith("sha256:") and "max_tokens" not in job


def test_post_refuses_a_model_the_server_does_not_have_unless_forced(rigs: Rigs) -> None:
    """A job nobody here could run is not posted by accident; --force posts it with a warning."""
    res = rigs.wl("alice", "infer", "post", "--prompt", "hi", "--model", "absent:1b")
    assert res.exit_code == 1 and "absent:1b" in res.output and "--force" in res.output
    with rigs.board("alice") as b:
        assert [i for i in b.view().items() if i.type == "inference"] == []
    res = rigs.wl("alice", "infer", "post", "--prompt", "hi", "--model", "absent:1b", "--force")
    assert res.exit_code == 0, res.output
    assert "not available locally" in res.stdout


def test_post_infers_the_backend_from_the_model(rigs: Rigs) -> None:
    """Without --backend: the embedded model is llama-cpp's (no server asked), a model the server lists is its."""
    code, data = rigs.wl_json("alice", "infer", "post", "--prompt", "hi", "--model", "gemma3:270m", "--no-push")
    assert code == 0 and data["job"]["backend"] == "llama-cpp", data
    code, data = rigs.wl_json("alice", "infer", "post", "--prompt", "hi", "--model", MODEL, "--no-push")
    assert code == 0 and data["job"]["backend"] == "ollama", data


def test_wrong_type_is_refused_mentioning_inference(rigs: Rigs) -> None:
    code, data = rigs.wl_json("alice", "post", "--title", "write docs", "--type", "docs")
    res = rigs.wl("bob", "infer", "run", data["id"])
    assert res.exit_code == 1
    assert "inference" in res.stderr and res.stderr.startswith("wl: error:")
    assert rigs.item("alice", data["id"]).status == "open"


def test_already_claimed_item_is_refused_mentioning_open(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    assert rigs.wl("carol", "claim", iid).exit_code == 0
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1
    assert '"open"' in res.stderr and "carol" in res.stderr


def test_description_that_is_not_json_is_refused(rigs: Rigs) -> None:
    code, data = rigs.wl_json("alice", "post", "--title", "bad job", "--type", "inference", "--description", "not json")
    res = rigs.wl("bob", "infer", "run", data["id"])
    assert res.exit_code == 1
    assert "not valid JSON" in res.stderr
    assert rigs.item("alice", data["id"]).status == "open"  # refused before claiming


def test_backend_failure_puts_the_item_back_to_open(rigs: Rigs, ollama: FakeOllama) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    ollama.state.fail_status = 500
    ollama.state.fail_paths = ("/api/generate",)  # listing works, so pre-flight passes and the claim is made
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1
    assert "released" in res.stderr and "Traceback" not in res.output
    item = rigs.item("alice", iid)
    assert item.status == "open" and item.claimed_by is None


def test_anchor_style_job_with_no_ollama_fails_in_one_line_and_reopens(tmp_path: Path) -> None:
    rigs = make_rigs(tmp_path, env={"OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"})
    code, data = rigs.wl_json(
        "alice", "post", "--title", "infer: what is 1+1", "--type", "inference",
        "--description", '{"prompt":"what is 1+1","model":"llama3.2:1b","seed":42,"max_tokens":100}',
    )
    res = rigs.wl("bob", "infer", "run", data["id"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wl: error:") and "Ollama" in lines[0]
    assert rigs.item("alice", data["id"]).status == "open"


def test_skip_claim_succeeds_on_an_item_claimed_by_this_rig(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim")
    assert res.exit_code == 0, res.output
    assert rigs.item("alice", iid).status == "in_review"


def test_skip_claim_on_an_open_item_fails_mentioning_claimed(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim")
    assert res.exit_code == 1 and "claimed" in res.stderr
    assert rigs.item("alice", iid).status == "open"


def test_skip_claim_refuses_an_item_claimed_by_another_rig(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    assert rigs.wl("carol", "claim", iid).exit_code == 0
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim")
    assert res.exit_code == 1 and "carol" in res.stderr
    assert rigs.item("alice", iid).claimed_by == "carol"


def test_skip_claim_backend_failure_leaves_it_claimed(rigs: Rigs, ollama: FakeOllama) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    ollama.state.fail_status = 500
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim")
    assert res.exit_code == 1 and "claim is kept" in res.stderr
    item = rigs.item("alice", iid)
    assert item.status == "claimed" and item.claimed_by == "bob"


def test_verify_match_records_a_signed_attestation(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output
    assert "✓ VERIFIED — hashes match" in res.stdout
    for line in ("Expected: sha256:", "Actual:   sha256:", "Output:"):
        assert line in res.stdout
    with rigs.board("alice") as b:
        b.refresh()
        att = b.view().attestations(iid)["carol"]
    assert att["verdict"] == "VERIFIED" and att["mode"] == "rerun" and att["signature"].startswith("0x")


def _submit(rigs: Rigs, handle: str, item_id: str, evidence: dict[str, object]) -> None:
    """A worker submitting evidence of its own making (signed with its own key), through `wl done`."""
    with rigs.board(handle) as b:
        context = {"board_id": b.meta()["board_id"], "item_id": item_id}
    record = {k: v for k, v in evidence.items() if k != "signature"}
    record["signature"] = sign_record("evidence", record, context, load_private_key(rigs.home(handle)))
    res = rigs.wl(handle, "done", item_id, "--evidence", orjson.dumps(record).decode())
    assert res.exit_code == 0, res.output


def test_verify_mismatch_for_a_consistently_rewritten_output(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    lie = "The answer is 2."
    _submit(rigs, "bob", iid, {"output": lie, "output_hash": output_hash(lie), "model": MODEL, "seed": 42,
                               "backend": "ollama", "worker": "bob"})
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 1
    assert "✗ MISMATCH — hashes differ" in res.stdout
    assert "sha256:9f257ef08ce4a87bfbe460ce5a51e7d17ec4856ad13ebf5e44979318db98a8fe" in res.stdout


def test_verify_invalid_for_an_edited_output_without_running_anything(rigs: Rigs, ollama: FakeOllama) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    _submit(rigs, "bob", iid, {"output": "edited", "output_hash": output_hash("original"), "model": MODEL,
                               "seed": 42, "backend": "ollama", "worker": "bob"})
    calls = len(ollama.state.requests)
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 1 and "✗ INVALID" in res.stdout and "hash" in res.stdout
    assert not [r for r in ollama.state.requests[calls:] if r.path == "/api/generate"]


def test_verify_invalid_for_a_wrong_seed_or_a_forged_signature(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    # carol rewrites bob's evidence on the board: output and hash consistent, signature now wrong
    with rigs.board("carol") as b:
        b.refresh()
        ev = Evidence.decode(b.view().completion(iid).evidence)  # type: ignore[union-attr]
    forged = dict(ev.to_dict(), output="The answer is 2.", output_hash=output_hash("The answer is 2."))
    assert rigs.wl("alice", "reject", iid).exit_code == 0  # the poster sends it back to bob
    res = rigs.wl("bob", "done", iid, "--evidence", orjson.dumps(forged).decode())
    assert res.exit_code == 0
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 1 and "INVALID" in res.stdout and "signature" in res.stdout


def test_verify_wrong_type_and_no_completion_cannot_verify(rigs: Rigs) -> None:
    code, data = rigs.wl_json("alice", "post", "--title", "docs", "--type", "docs")
    res = rigs.wl("carol", "infer", "verify", data["id"])
    assert res.exit_code == 3 and "inference" in res.stderr
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 3 and "no completion" in res.stderr


def test_verify_with_the_backend_down_cannot_verify(rigs: Rigs, ollama: FakeOllama) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    ollama.state.fail_status = 500
    res = rigs.wl("carol", "infer", "verify", iid, "--no-record")
    assert res.exit_code == 3 and res.stderr.startswith("wl: error:")


def test_status_shows_job_result_and_attestations(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    assert rigs.wl("carol", "infer", "verify", iid).exit_code == 0
    code, data = rigs.wl_json("carol", "infer", "status", iid)
    assert code == 0
    assert data["job"]["model"] == MODEL and data["evidence"]["worker"] == "bob"
    assert data["attestations"]["carol"]["verdict"] == "VERIFIED"
    res = rigs.wl("carol", "infer", "status", iid)
    assert "Attested by carol: VERIFIED" in res.stdout


def test_run_no_push_keeps_the_result_locally_and_sync_publishes_it(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    res = rigs.wl("bob", "infer", "run", iid, "--no-push")
    assert res.exit_code == 0 and "not pushed" in res.stdout
    assert rigs.item("alice", iid).status == "open"
    assert rigs.wl("bob", "sync").exit_code == 0
    assert rigs.item("alice", iid).status == "in_review"


def test_large_outputs_move_to_a_content_addressed_blob(rigs: Rigs, ollama: FakeOllama) -> None:
    prompt = "é" * 40_000  # the fake answers with the prompt reversed: 80,000 UTF-8 bytes > 64 KiB
    iid = post(rigs, "alice", "--prompt", prompt, "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    ev = _evidence(rigs, iid)
    assert ev.output is None and ev.output_blob == ev.output_hash
    with rigs.board("carol") as b:
        blob = b.view().blob(ev.output_hash.removeprefix("sha256:"))
    assert blob is not None and blob.decode().startswith(prompt[::-1]) and output_hash(blob.decode()) == ev.output_hash
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output
