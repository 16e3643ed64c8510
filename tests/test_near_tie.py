"""A forged runner-up token inside the prefill tolerance must not pass verification.

llama.cpp's batched logits drift slightly from one-token decoding, so prefill scoring tolerates near-ties. A
dishonest worker can exploit that: swap in a close second choice and continue greedily from it. Prefill alone
would accept such an output; verify confirms every inexact prefill by regeneration, so it must say MISMATCH.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from infer_helpers import make_rigs, post

from board.keys import load_private_key
from wl_infer.backends import BackendConfig
from wl_infer.codec import Evidence, Job, output_hash
from wl_infer.signing import sign_record

np = pytest.importorskip("numpy")
pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

PROMPT = "The three primary colours are"


def _forge(home: Path, job: Job) -> tuple[list[int], str, list[int]]:
    """Honest tokens, and a forgery: the widest near-tie swapped for its runner-up, then greedy onwards."""
    from wl_infer.backends.llama_cpp import PREFILL_TOLERANCE, LlamaCppBackend

    backend = LlamaCppBackend(BackendConfig(home=home, threads=1))
    try:
        gen = backend.generate(job)
        assert gen.tokens
        info = backend.check_digest(job)
        eng = backend._engine(backend._settings(job, info))  # test reaches the engine: it plays the forger
        prompt = backend._prompt_ids(eng, job)
        seq = prompt + gen.tokens
        eng.reset()
        rows = eng.decode(seq, 0, [len(prompt) - 1 <= i < len(seq) - 1 for i in range(len(seq))])
        logits = eng.logits(rows).copy()
        near = []
        for k, tok in enumerate(gen.tokens):
            order = np.argsort(-logits[k])
            runner = int(order[1]) if int(order[0]) == tok else int(order[0])
            gap = float(logits[k][tok] - logits[k][runner])
            if gap <= PREFILL_TOLERANCE:
                near.append((gap, k, runner))
        if not near:
            pytest.skip("no near-tie in this output on this machine")
        _, k, runner = max(near)
        forged = gen.tokens[:k] + [runner]
        eng.reset()
        eng.decode(prompt + forged, 0, [False] * (len(prompt) + len(forged) - 1) + [True])
        while len(forged) < job.max_tokens:
            t = int(np.argmax(eng.logits(1)[0]))
            if eng.is_eog(t):
                break
            forged.append(t)
            eng.decode([t], len(prompt) + len(forged) - 1, [True])
        return gen.tokens, eng.detokenize(forged), forged
    finally:
        backend.close()


def test_a_near_tie_forgery_is_a_mismatch(tmp_path: Path) -> None:
    rigs = make_rigs(tmp_path)
    iid = post(rigs, "alice", "--prompt", PROMPT, "--model", "gemma3:270m", "--backend", "llama-cpp",
               "--max-tokens", "24")
    job = Job(prompt=PROMPT, model="gemma3:270m", max_tokens=24, backend="llama-cpp")
    honest, forged_text, forged = _forge(tmp_path / "forger", job)
    assert forged != honest
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    with rigs.board("bob") as b:
        context = {"board_id": b.meta()["board_id"], "item_id": iid}
        digest = orjson.loads(b.get_item(iid).description)["model_digest"]
    ev = Evidence(output=forged_text, output_hash=output_hash(forged_text), model="gemma3:270m", seed=42,
                  backend="llama-cpp", tokens=forged, worker="bob",
                  envelope={"backend": "llama-cpp", "model_digest": digest})
    record = ev.to_dict()
    record["signature"] = sign_record("evidence", ev.unsigned_dict(), context, load_private_key(rigs.home("bob")))
    assert rigs.wl("bob", "done", iid, "--evidence", orjson.dumps(record).decode()).exit_code == 0
    code, data = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "prefill")
    assert code == 1, data
    assert data["verdict"] == "MISMATCH" and data["mode"] in ("prefill", "prefill+rerun")


def test_auto_prefers_prefill_only_where_it_is_expected_to_be_cheaper() -> None:
    """The rule itself (no engine): long llama.cpp outputs are verified by rerun, short ones by prefill."""
    from wl_infer.backends.llama_cpp import LlamaCppBackend
    from wl_infer.backends.vllm import VLLMBackend
    from wl_infer.verify import choose_mode

    def ev(n: int | None) -> Evidence:
        return Evidence(output="x", output_hash=output_hash("x"), model="m", seed=42,
                        tokens=None if n is None else [1] * n)

    llama = LlamaCppBackend(BackendConfig())
    assert choose_mode(llama, ev(16)) == "prefill" and choose_mode(llama, ev(64)) == "prefill"
    assert choose_mode(llama, ev(65)) == "rerun" and choose_mode(llama, ev(None)) == "rerun"
    assert choose_mode(VLLMBackend(BackendConfig()), ev(4096)) == "prefill"  # batch-invariant: no drift
