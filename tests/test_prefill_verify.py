"""Prefill verification on the real llama.cpp engine and embedded model: cheaper than rerun, and as strict.

A dishonest worker here forges evidence that is consistent with itself (tokens, output, hash and a valid
signature all agree) so that only reproducing the model can catch it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from infer_helpers import Rigs, make_rigs, post

from board.keys import load_private_key
from wl_infer.codec import Evidence, output_hash
from wl_infer.signing import sign_record

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

MAX_TOKENS = 16
# A base-model prompt whose greedy continuation runs to max_tokens with clear argmax margins.
JOB = ("--prompt", "Question: What is the capital of France?\nAnswer:", "--model", "gemma3:270m",
       "--backend", "llama-cpp", "--max-tokens", str(MAX_TOKENS))
FORGE_AT = 5


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob", "carol", "dave"))


@cache
def _vocab() -> Any:
    """The engine's own tokenizer (vocabulary only), to forge token lists the way a cheating worker would."""
    from wl_infer.backends.gguf import resolve_gguf

    path = resolve_gguf("gemma3:270m", None).path
    return llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)


def _detokenize(tokens: list[int]) -> str:
    """Concatenated token pieces, decoded with replacement: how the backend turns tokens into output."""
    return b"".join(_vocab().detokenize([t]) for t in tokens).decode("utf-8", errors="replace")


def _honest_run(rigs: Rigs) -> tuple[str, Evidence]:
    iid = post(rigs, "alice", *JOB)
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 0, res.output
    with rigs.board("bob") as b:
        comp = b.view().completion(iid)
        assert comp is not None
        ev = Evidence.decode(comp.evidence)
    assert ev.tokens is not None and len(ev.tokens) == MAX_TOKENS  # ran to the limit
    assert _detokenize(ev.tokens) == ev.output  # the forging tool renders tokens exactly as the engine does
    return iid, ev


def _resubmit(rigs: Rigs, item_id: str, honest: Evidence, tokens: list[int] | None) -> dict[str, Any]:
    """Bob replaces his evidence with a consistent forgery: new tokens, their text, its hash, his signature."""
    record = honest.to_dict()
    record.pop("signature", None)
    if tokens is None:
        record.pop("tokens", None)
    else:
        record["tokens"] = tokens
        record["output"] = _detokenize(tokens)
        record["output_hash"] = output_hash(record["output"])
    assert rigs.wl("alice", "reject", item_id).exit_code == 0  # back to bob, claimed
    with rigs.board("bob") as b:
        context = {"board_id": b.meta()["board_id"], "item_id": item_id}
    record["signature"] = sign_record("evidence", record, context, load_private_key(rigs.home("bob")))
    res = rigs.wl("bob", "done", item_id, "--evidence", orjson.dumps(record).decode())
    assert res.exit_code == 0, res.output
    return record


def _attestation(rigs: Rigs, item_id: str, verifier: str) -> dict[str, Any]:
    with rigs.board("alice") as b:
        b.refresh()
        return b.view().attestations(item_id)[verifier]


def test_prefill_verifies_honest_evidence_and_agrees_with_rerun(rigs: Rigs) -> None:
    iid, ev = _honest_run(rigs)
    code, pre = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "prefill")
    assert code == 0, pre
    assert (pre["verdict"], pre["mode"], pre["expected"], pre["actual"]) == (
        "VERIFIED", "prefill", ev.output_hash, ev.output_hash)
    assert pre["envelope_differences"] == []
    att = _attestation(rigs, iid, "carol")
    assert att["mode"] == "prefill" and att["verdict"] == "VERIFIED" and att["signature"].startswith("0x")

    code, rerun = rigs.wl_json("dave", "infer", "verify", iid, "--mode", "rerun")
    assert code == 0, rerun
    assert (rerun["verdict"], rerun["mode"], rerun["actual"]) == ("VERIFIED", "rerun", ev.output_hash)
    assert _attestation(rigs, iid, "dave")["mode"] == "rerun"

    res = rigs.wl("alice", "infer", "verify", iid, "--mode", "auto", "--no-record")  # tokens present: prefill
    assert res.exit_code == 0, res.output
    assert "✓ VERIFIED" in res.stdout and "Mode:     prefill" in res.stdout


def test_a_forged_token_is_a_mismatch_at_its_position(rigs: Rigs) -> None:
    iid, honest = _honest_run(rigs)
    assert honest.tokens is not None
    (purple,) = _vocab().tokenize(b" purple", add_bos=False)
    assert purple != honest.tokens[FORGE_AT]
    forged = list(honest.tokens)
    forged[FORGE_AT] = purple
    lie = _resubmit(rigs, iid, honest, forged)
    assert lie["output"] != honest.output and " purple" in lie["output"]

    code, data = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "prefill")
    assert code == 1
    assert data["verdict"] == "MISMATCH" and data["mode"] == "prefill"
    d = data["divergence"]
    assert d["position"] == FORGE_AT
    assert d["claimed_token"] == purple and d["expected_token"] == honest.tokens[FORGE_AT]
    assert d["margin"] > 0
    att = _attestation(rigs, iid, "carol")
    assert att["verdict"] == "MISMATCH" and att["mode"] == "prefill" and att["first_divergence"]["position"] == FORGE_AT

    res = rigs.wl("dave", "infer", "verify", iid, "--mode", "prefill", "--no-record")
    assert res.exit_code == 1
    assert "✗ MISMATCH" in res.stdout and f"Diverges at token {FORGE_AT}: claimed {purple} " in res.stdout

    code, rerun = rigs.wl_json("dave", "infer", "verify", iid, "--mode", "rerun", "--no-record")
    assert code == 1 and rerun["verdict"] == "MISMATCH" and rerun["actual"] == honest.output_hash
    assert rerun["divergence"]["position"] == FORGE_AT  # the two modes point at the same token


@pytest.mark.parametrize("change", ["truncated", "extended"])
def test_truncated_and_extended_token_lists_are_caught(rigs: Rigs, change: str) -> None:
    iid, honest = _honest_run(rigs)
    assert honest.tokens is not None
    tokens = honest.tokens[:-3] if change == "truncated" else [*honest.tokens, honest.tokens[-1]]
    lie = _resubmit(rigs, iid, honest, tokens)
    assert lie["output_hash"] != honest.output_hash
    code, data = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "prefill", "--no-record")
    assert code == 1, data
    assert data["verdict"] == "MISMATCH" and data["mode"] == "prefill"
    if change == "truncated":
        assert "would continue" in data["reason"]  # greedy decoding does not stop where the claim stops
    else:
        assert f"{MAX_TOKENS + 1} tokens claimed but max_tokens is {MAX_TOKENS}" in data["reason"]


def test_auto_reruns_evidence_that_carries_no_tokens(rigs: Rigs) -> None:
    iid, honest = _honest_run(rigs)
    _resubmit(rigs, iid, honest, None)  # the same output, signed again, without token ids
    code, data = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "auto")
    assert code == 0, data
    assert data["verdict"] == "VERIFIED" and data["mode"] == "rerun"
    assert _attestation(rigs, iid, "carol")["mode"] == "rerun"
    res = rigs.wl("dave", "infer", "verify", iid, "--mode", "prefill", "--no-record")
    assert res.exit_code == 3 and "carries none" in res.stderr
