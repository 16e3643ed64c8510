"""A forged runner-up token, however close the call, is a MISMATCH from one prefill pass.

Under batch-invariant numerics the batched pass reproduces every choice exactly, so there is no tolerance for
a forger to hide in: swap in the runner-up where the margin is smallest, continue greedily from it, and verify
says MISMATCH in mode `prefill` (no rerun) at the swapped position. Evidence made under the older,
batch-variant numerics is still scored with the tolerance and confirmed by a rerun.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from infer_helpers import Rigs, make_rigs, post

from board.keys import load_private_key
from wl_infer.backends import BackendConfig
from wl_infer.codec import Evidence, Job, output_hash
from wl_infer.signing import sign_record

np = pytest.importorskip("numpy")
pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

PROMPT = "The three primary colours are"


def _forge(home: Path, job: Job) -> tuple[list[int], str, list[int], int, dict[str, object]]:
    """Honest tokens, and a forgery: the closest call swapped for its runner-up, then greedy onwards."""
    from wl_infer.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(BackendConfig(home=home, threads=1))
    try:
        gen = backend.generate(job)
        assert gen.tokens
        info = backend.check_digest(job)
        eng = backend._engine(backend._settings(job, info))  # test reaches the engine: it plays the forger
        prompt = backend._prompt_ids(eng, job)
        seq = prompt + gen.tokens
        eng.reset()
        logits = eng.decode(seq, 0, [len(prompt) - 1 <= i < len(seq) - 1 for i in range(len(seq))]).copy()
        gaps = []
        for k, tok in enumerate(gen.tokens):
            order = np.argsort(-logits[k], kind="stable")
            assert int(order[0]) == tok  # exact: the claimed token is the batched argmax everywhere
            gaps.append((float(logits[k][tok] - logits[k][order[1]]), k, int(order[1])))
        _, k, runner = min(gaps)
        forged = gen.tokens[:k] + [runner]
        eng.reset()
        row = eng.decode(prompt + forged, 0, [False] * (len(prompt) + len(forged) - 1) + [True])[0]
        while len(forged) < job.max_tokens:
            t = int(np.argmax(row))
            if eng.is_eog(t):
                break
            forged.append(t)
            row = eng.decode([t], len(prompt) + len(forged) - 1, [True])[0]
        return gen.tokens, eng.detokenize(forged), forged, k, gen.envelope
    finally:
        backend.close()


def _submit(rigs: Rigs, iid: str, text: str, tokens: list[int], envelope: dict[str, object]) -> None:
    with rigs.board("bob") as b:
        context = {"board_id": b.meta()["board_id"], "item_id": iid}
    ev = Evidence(output=text, output_hash=output_hash(text), model="gemma3:270m", seed=42,
                  backend="llama-cpp", tokens=tokens, worker="bob", envelope=envelope)
    record = ev.to_dict()
    record["signature"] = sign_record("evidence", ev.unsigned_dict(), context, load_private_key(rigs.home("bob")))
    res = rigs.wl("bob", "done", iid, "--evidence", orjson.dumps(record).decode())
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("legacy", [False, True])
def test_the_closest_runner_up_forgery_is_a_mismatch(tmp_path: Path, legacy: bool) -> None:
    rigs = make_rigs(tmp_path)
    iid = post(rigs, "alice", "--prompt", PROMPT, "--model", "gemma3:270m", "--backend", "llama-cpp",
               "--max-tokens", "24")
    job = Job(prompt=PROMPT, model="gemma3:270m", max_tokens=24, backend="llama-cpp")
    honest, forged_text, forged, k, envelope = _forge(tmp_path / "forger", job)
    assert forged != honest
    if legacy:  # claims the older numerics: scored with the tolerance, so only the rerun can decide
        runtime = dict(envelope["runtime"])  # type: ignore[call-overload]
        runtime.pop("numerics")
        envelope = {**envelope, "runtime": runtime}
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    _submit(rigs, iid, forged_text, forged, envelope)
    code, data = rigs.wl_json("carol", "infer", "verify", iid, "--mode", "auto")
    assert code == 1, data
    assert data["verdict"] == "MISMATCH"
    assert data["divergence"]["position"] == k
    if legacy:
        assert data["mode"] in ("prefill", "prefill+rerun", "rerun")
    else:
        assert data["mode"] == "prefill"  # one pass decided it, however small the margin
        assert data["divergence"]["claimed_token"] == forged[k] and data["divergence"]["expected_token"] == honest[k]


def test_auto_prefers_prefill_only_where_it_is_expected_to_be_cheaper() -> None:
    """The rule itself (no engine): exact evidence by prefill at any length; older evidence by rerun when long."""
    from wl_infer.backends.llama_cpp import LlamaCppBackend
    from wl_infer.backends.vllm import VLLMBackend
    from wl_infer.verify import choose_mode

    def ev(n: int | None) -> Evidence:
        return Evidence(output="x", output_hash=output_hash("x"), model="m", seed=42,
                        tokens=None if n is None else [1] * n)

    llama = LlamaCppBackend(BackendConfig())
    assert choose_mode(llama, ev(16)) == "prefill" and choose_mode(llama, ev(64)) == "prefill"
    assert choose_mode(llama, ev(65)) == "rerun" and choose_mode(llama, ev(None)) == "rerun"
    exact = ev(4096)
    exact.envelope = {"runtime": {"numerics": llama.exact_numerics}}  # made under exact numerics: one pass
    assert choose_mode(llama, exact) == "prefill"
    exact.envelope = {"runtime": {"numerics": "batch-variant"}}
    assert choose_mode(llama, exact) == "rerun"
    assert choose_mode(VLLMBackend(BackendConfig()), ev(4096)) == "prefill"  # batch-invariant: no drift
