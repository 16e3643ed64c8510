"""Exact verification on the embedded engine (issue 11): one batched pass reproduces every honest choice, bit
for bit, greedy or sampled; any other token at any position is the first divergence.

The engine really runs (llama.cpp, gemma3:270m). A forger here edits honest token lists directly: the first,
a middle and the last token, and runner-up swaps from the closest call to the clearest one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wl_infer.backends import BackendConfig
from wl_infer.backends.base import Generation
from wl_infer.backends.llama_cpp import NUMERICS, PREFILL_TOLERANCE, LlamaCppBackend
from wl_infer.codec import Job

np = pytest.importorskip("numpy")
pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(2400)]

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Question: Why is the sky blue? Answer:",
    "def fibonacci(n):",
    "Here is a recipe for a simple tomato soup:",
]


def job(prompt: str, n: int, temperature: float = 0.0, seed: int = 42, **options: object) -> Job:
    opts = dict(options)
    if temperature:
        opts["temperature"] = temperature
    return Job(prompt=prompt, model="gemma3:270m", max_tokens=n, seed=seed, backend="llama-cpp", options=opts)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(BackendConfig(home=tmp_path_factory.mktemp("exact-home")))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def runs(llama: LlamaCppBackend) -> dict[tuple[int, float], tuple[Job, Generation]]:
    """Honest outputs: four prompts, greedy and T = 0.8, up to 96 tokens each."""
    out = {}
    for i, prompt in enumerate(PROMPTS):
        for temp in (0.0, 0.8):
            j = job(prompt, 96, temp, seed=7 + i)
            out[(i, temp)] = (j, llama.generate(j))
    return out


def _exact_pass(llama: LlamaCppBackend, j: Job, gen: Generation) -> None:
    res = llama.score(j, list(gen.tokens or []), gen.output)
    assert res.ok, res.reason
    assert res.details["exact"] and res.details["strict"] and res.details["near_ties"] == []
    assert res.details["numerics"] == NUMERICS


def test_the_engine_is_batch_invariant_and_says_so(llama: LlamaCppBackend) -> None:
    j = job(PROMPTS[0], 4)
    env = llama.envelope(j)
    assert env["runtime"]["numerics"] == NUMERICS
    assert env["runtime"]["extra_bufts"] is False and env["runtime"]["tiled_mm"] is False
    assert env["sampling"]["method"] == "greedy"
    sampled = llama.envelope(job(PROMPTS[0], 4, 0.8))["sampling"]
    assert sampled["method"] == "gumbel-max" and sampled["temperature"] == 0.8 and "splitmix64" in sampled["noise"]


@pytest.mark.parametrize("temp", [0.0, 0.8])
def test_honest_outputs_verify_exactly_in_one_pass(
    llama: LlamaCppBackend, runs: dict[tuple[int, float], tuple[Job, Generation]], temp: float
) -> None:
    lengths = []
    for (_, t), (j, gen) in runs.items():
        if t == temp:
            _exact_pass(llama, j, gen)
            lengths.append(len(gen.tokens or []))
    assert max(lengths) == 96


def test_a_long_greedy_output_verifies_exactly_in_any_layout(llama: LlamaCppBackend) -> None:
    long = job(PROMPTS[0], 288)
    gen = llama.generate(long)
    assert len(gen.tokens or []) == 288
    _exact_pass(llama, long, gen)
    # the verifier's layout is free: 7-token batches (41 decodes) score the same output just as exactly
    _exact_pass(llama, job(PROMPTS[0], 288, n_batch=7), gen)


def test_sampling_is_reproducible_and_keyed_by_the_seed(llama: LlamaCppBackend) -> None:
    a = llama.generate(job(PROMPTS[1], 48, 0.8, seed=1))
    assert llama.generate(job(PROMPTS[1], 48, 0.8, seed=1)).tokens == a.tokens
    others = [llama.generate(job(PROMPTS[1], 48, 0.8, seed=s)).tokens for s in (2, 3)]
    assert any(o != a.tokens for o in others)  # the seed keys the draw
    greedy = llama.generate(job(PROMPTS[1], 48)).tokens
    assert a.tokens != greedy


def _decision_rows(llama: LlamaCppBackend, j: Job, tokens: list[int]) -> list[np.ndarray]:
    """Per output position, the decision scores a verifier recomputes (the forger's own view)."""
    from wl_infer import sampling

    info = llama.check_digest(j)
    eng = llama._engine(llama._settings(j, info))  # the test plays the forger: it reads the engine's rows
    prompt = llama._prompt_ids(eng, j)
    seq = prompt + tokens
    eng.reset()
    rows = []
    for start in range(0, len(seq), eng.capacity):
        chunk = seq[start : start + eng.capacity]
        got = eng.decode(chunk, start, [len(prompt) - 1 <= start + i < len(seq) - 1 for i in range(len(chunk))])
        rows.extend(np.array(r, dtype=np.float64) for r in got)
    temp = sampling.temperature_of(j.options)
    return [r if temp == 0 else sampling.scores(r, temp, j.seed, k) for k, r in enumerate(rows)]


@pytest.mark.parametrize("temp", [0.0, 0.8])
def test_every_forgery_is_a_mismatch_at_its_position(
    llama: LlamaCppBackend, runs: dict[tuple[int, float], tuple[Job, Generation]], temp: float
) -> None:
    j, gen = runs[(0, temp)]
    honest = list(gen.tokens or [])
    n = len(honest)
    scores = _decision_rows(llama, j, honest)
    order = [np.argsort(-s, kind="stable") for s in scores]
    gaps = [float(scores[k][honest[k]] - scores[k][order[k][1]]) for k in range(n)]
    assert all(int(order[k][0]) == honest[k] for k in range(n))  # the claim is the choice everywhere
    by_gap = sorted(range(n), key=lambda k: gaps[k])
    cases: list[tuple[str, int, int]] = []
    for name, k in (("first", 0), ("middle", n // 2), ("last", n - 1)):
        cases.append((name, k, (honest[k] + 1) % len(scores[k])))
    for rank in (0, 1, n // 4, n // 2, 3 * n // 4, n - 1):  # runner-up swaps, closest call to clearest
        k = by_gap[rank]
        cases.append((f"runner-up gap {gaps[k]:.4f}", k, int(order[k][1])))
    for name, k, tok in cases:
        forged = list(honest)
        forged[k] = tok
        res = llama.score(j, forged, llama.detokenize(j, forged))
        assert not res.ok, name
        assert res.first_divergence == k, (name, res.reason)
        assert (res.claimed_token, res.expected_token) == (tok, honest[k]), name
        assert res.margin is not None and res.margin >= 0, name
    # the closest call really was close: the old tolerance would have let that swap through
    assert min(gaps) * (temp or 1.0) < PREFILL_TOLERANCE


def test_a_wrong_stop_is_caught_for_sampled_outputs(
    llama: LlamaCppBackend, runs: dict[tuple[int, float], tuple[Job, Generation]]
) -> None:
    j, gen = runs[(0, 0.8)]
    honest = list(gen.tokens or [])
    cut = honest[: len(honest) // 2]  # stopping early: the next choice is not end-of-generation
    res = llama.score(j, cut, llama.detokenize(j, cut))
    assert not res.ok and not res.stop_consistent and "would continue" in res.reason


def test_legacy_scoring_still_tolerates_near_ties(llama: LlamaCppBackend) -> None:
    """Evidence from batch-variant numerics is scored with the tolerance (verify then reruns it)."""
    j = job(PROMPTS[2], 32)
    gen = llama.generate(j)
    res = llama.score(j, list(gen.tokens or []), gen.output, strict=False)
    assert res.ok and res.details["strict"] is False and res.details["tolerance"] > 0
