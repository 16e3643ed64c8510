"""The `vllm` backend.

vLLM cannot be installed here; the engine is replaced at its import boundary: a small fake `vllm` module
(and, for the GPU fields, fake `torch` and `pynvml` modules) is put into `sys.modules`. The fake records the
arguments it gets and "decodes" greedily with a fixed character-level rule, so generation and prompt
logprobs agree the way a deterministic engine's would.
"""

from __future__ import annotations

import os
import sys
import types
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

from wl_infer.backends import (
    BackendConfig,
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    ModelNotFound,
    get_backend,
)
from wl_infer.backends.vllm import VLLMBackend
from wl_infer.codec import Job

MODEL = "Qwen/Qwen3-0.6B"
BOS, EOS = 1, 2
ALPHABET = "abcdefgh ."
TOP_LP, SECOND_LP, OTHER_LP = -0.25, -1.5, -4.0
MAX_MODEL_LEN = 128  # the fake's context: with max_tokens None it generates until the context is full


# -- the fake engine -------------------------------------------------------------------------------------


def greedy_next(seq: list[int]) -> int:
    """The fake model's greedy choice after `seq`: a letter from ALPHABET, EOS right after a full stop."""
    if seq[-1] == ord("."):
        return EOS
    return ord(ALPHABET[zlib.crc32(repr(seq).encode()) % len(ALPHABET)])


def runner_up(seq: list[int]) -> int:
    best = greedy_next(seq)
    return ord("a") if best == EOS else ord(ALPHABET[(ALPHABET.index(chr(best)) + 1) % len(ALPHABET)])


class FakeTokenizer:
    """One token per character, BOS prepended, EOS = 2 (vLLM cannot be installed here)."""

    eos_token_id = EOS

    def encode(self, text: str) -> list[int]:
        return [BOS] + [ord(c) for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        special = {BOS: "<s>", EOS: "</s>"}
        return "".join(("" if skip_special_tokens else special[i]) if i in special else chr(i) for i in ids)

    def __len__(self) -> int:
        return 0x110000


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict[int, Logprob] | None] | None


def make_fake_vllm() -> types.ModuleType:
    """A stand-in for the `vllm` package: vLLM cannot be installed here; the engine is replaced at its
    import boundary. Records LLM/SamplingParams arguments and the environment at engine start."""
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0.0-fake"  # type: ignore[attr-defined]
    mod.llm_instances = []  # type: ignore[attr-defined]
    mod.sampling_params = []  # type: ignore[attr-defined]
    mod.generate_calls = []  # type: ignore[attr-defined]
    mod.fail_load = None  # type: ignore[attr-defined]

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            mod.sampling_params.append(kwargs)  # type: ignore[attr-defined]

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            if mod.fail_load is not None:  # type: ignore[attr-defined]
                raise mod.fail_load  # type: ignore[attr-defined]
            self.kwargs = kwargs
            self.env = {
                k: os.environ.get(k) for k in ("VLLM_BATCH_INVARIANT", "VLLM_ENABLE_V1_MULTIPROCESSING")
            }
            self.llm_engine = types.SimpleNamespace(
                model_config=types.SimpleNamespace(dtype="torch.bfloat16", max_model_len=MAX_MODEL_LEN)
            )
            mod.llm_instances.append(self)  # type: ignore[attr-defined]

        def get_tokenizer(self) -> FakeTokenizer:
            return FakeTokenizer()

        def generate(
            self, prompts: list[Any], params: SamplingParams, use_tqdm: bool = True
        ) -> list[RequestOutput]:
            mod.generate_calls.append({"prompts": prompts, "params": params.kwargs, "use_tqdm": use_tqdm})  # type: ignore[attr-defined]
            return [self._one(p, params.kwargs) for p in prompts]

        def _one(self, prompt: Any, params: dict[str, Any]) -> RequestOutput:
            tok = FakeTokenizer()
            ids = tok.encode(prompt) if isinstance(prompt, str) else list(prompt["prompt_token_ids"])
            if len(ids) >= MAX_MODEL_LEN:
                raise ValueError(
                    f"The decoder prompt (length {len(ids)}) is longer than the maximum model length"
                )
            limit = params.get("max_tokens") or MAX_MODEL_LEN - len(ids)
            seq, gen, reason = list(ids), list[int](), "length"
            while len(gen) < limit:
                nxt = greedy_next(seq)
                gen.append(nxt)  # like vLLM V1, the EOS id is kept in token_ids, not in the text
                seq.append(nxt)
                if nxt == EOS:
                    reason = "stop"
                    break
            plp: list[dict[int, Logprob] | None] | None = None
            if params.get("prompt_logprobs"):
                plp = [None]
                for i in range(1, len(ids)):
                    best, second, actual = greedy_next(ids[:i]), runner_up(ids[:i]), ids[i]
                    entry = {best: Logprob(TOP_LP, 1), second: Logprob(SECOND_LP, 2)}
                    if actual not in entry:
                        entry[actual] = Logprob(OTHER_LP, 9)
                    plp.append(entry)
            text = tok.decode(gen, skip_special_tokens=True)
            return RequestOutput(ids, [CompletionOutput(text, gen, reason)], plp)

    mod.LLM = LLM  # type: ignore[attr-defined]
    mod.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "torch", None)  # no GPU unless a test says otherwise
    # the backend sets these; monkeypatch restores the caller's values afterwards
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    return mod


@pytest.fixture
def backend(fake_vllm: types.ModuleType) -> VLLMBackend:
    b = get_backend("vllm")
    assert isinstance(b, VLLMBackend)
    return b


# -- generation ------------------------------------------------------------------------------------------


def test_generate_arguments(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    gen = backend.generate(Job(prompt="hi", model=MODEL, seed=7, max_tokens=5, backend="vllm"))
    (llm,) = fake_vllm.llm_instances
    assert llm.kwargs == {"model": MODEL, "seed": 0, "dtype": "auto", "tensor_parallel_size": 1}
    assert llm.env == {"VLLM_BATCH_INVARIANT": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    call = fake_vllm.generate_calls[-1]
    assert call["prompts"] == ["hi"]
    assert call["params"] == {"temperature": 0.0, "seed": 7, "max_tokens": 5}
    assert call["use_tqdm"] is False
    assert len(gen.tokens or []) == 5 and gen.finish_reason == "length"
    assert gen.output == FakeTokenizer().decode(gen.tokens or [], skip_special_tokens=True)
    assert gen.prompt_tokens == 3


def test_max_tokens_zero_means_model_default(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    gen = backend.generate(Job(prompt="hi", model=MODEL))
    assert fake_vllm.generate_calls[-1]["params"]["max_tokens"] is None
    assert gen.finish_reason == "stop" and gen.tokens and gen.tokens[-1] == EOS


def test_deterministic(backend: VLLMBackend) -> None:
    a = backend.generate(Job(prompt="same", model=MODEL))
    b = backend.generate(Job(prompt="same", model=MODEL))
    assert (a.output, a.tokens) == (b.output, b.tokens)


def test_sampling_options_pass_through(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    backend.generate(Job(prompt="hi", model=MODEL, options={"top_k": 1, "temperature": 0.7, "n_ctx": 9}))
    assert fake_vllm.generate_calls[-1]["params"] == {
        "temperature": 0.0,
        "seed": 42,
        "max_tokens": None,
        "top_k": 1,
    }


def test_model_loaded_once(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    backend.generate(Job(prompt="one", model=MODEL, seed=1))
    backend.generate(Job(prompt="two", model=MODEL, seed=2))
    assert len(fake_vllm.llm_instances) == 1
    backend.generate(Job(prompt="three", model="other/model"))
    assert [i.kwargs["model"] for i in fake_vllm.llm_instances] == [MODEL, "other/model"]


def test_engine_args_from_config(fake_vllm: types.ModuleType) -> None:
    cfg = BackendConfig(
        extra={"vllm_dtype": "bfloat16", "vllm_tensor_parallel_size": 2, "vllm_max_model_len": 4096}
    )
    get_backend("vllm", cfg).generate(Job(prompt="x", model=MODEL))
    assert fake_vllm.llm_instances[0].kwargs == {
        "model": MODEL, "seed": 0, "dtype": "bfloat16", "tensor_parallel_size": 2, "max_model_len": 4096,
    }  # fmt: skip


def test_envelope_without_gpu(backend: VLLMBackend) -> None:
    env = backend.generate(Job(prompt="hi", model=MODEL, seed=3, max_tokens=4)).envelope
    assert env["backend"] == "vllm"
    assert env["backend_version"] == "0.0.0-fake"
    assert env["model"] == MODEL and env["model_digest"] is None
    assert env["dtype"] == "torch.bfloat16"
    assert env["tensor_parallel_size"] == 1
    assert env["engine_args"] == {"seed": 0}
    assert env["batch_invariant"] is True and env["multiprocessing"] is False
    assert env["sampling"] == {"temperature": 0.0, "seed": 3, "max_tokens": 4}
    assert env["gpu"] is None
    assert env["platform"] and env["wl_infer_version"]


def test_envelope_gpu_fields(monkeypatch: pytest.MonkeyPatch, backend: VLLMBackend) -> None:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: True,
        get_device_name=lambda i: "NVIDIA H100 80GB HBM3",
        get_device_capability=lambda i: (9, 0),
        device_count=lambda: 1,
    )
    torch.version = types.SimpleNamespace(cuda="12.8")  # type: ignore[attr-defined]
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: b"570.86.15"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    gpu = backend.envelope(Job(prompt="hi", model=MODEL))["gpu"]
    assert gpu == {
        "name": "NVIDIA H100 80GB HBM3",
        "count": 1,
        "capability": "9.0",
        "cuda": "12.8",
        "driver": "570.86.15",
    }


def test_no_digest_so_pinned_jobs_refused(backend: VLLMBackend) -> None:
    with pytest.raises(DigestMismatch):
        backend.generate(Job(prompt="hi", model=MODEL, model_digest="sha256:" + "0" * 64))


def test_missing_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")  # restored after the backend sets it
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(BackendUnavailable) as err:
        VLLMBackend().generate(Job(prompt="hi", model=MODEL))
    assert "pip install 'wl-infer[vllm]'" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_model_not_found(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    fake_vllm.fail_load = OSError("nope/x is not a local folder and is not a valid model identifier")  # type: ignore[attr-defined]
    with pytest.raises(ModelNotFound, match="nope/x"):
        backend.generate(Job(prompt="hi", model="nope/x"))


def test_load_failure_is_one_line(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    fake_vllm.fail_load = RuntimeError("CUDA out of memory.\nTried to allocate 20.00 GiB")  # type: ignore[attr-defined]
    with pytest.raises(BackendError) as err:
        backend.generate(Job(prompt="hi", model=MODEL))
    assert "\n" not in str(err.value) and "CUDA out of memory" in str(err.value)


# -- prefill scoring -------------------------------------------------------------------------------------


def test_capabilities() -> None:
    assert VLLMBackend.can_score is True and VLLMBackend.name == "vllm"


def test_score_accepts_honest_claim(fake_vllm: types.ModuleType, backend: VLLMBackend) -> None:
    job = Job(prompt="what is 1+1", model=MODEL, seed=5)
    gen = backend.generate(job)
    res = backend.score(job, gen.tokens or [], gen.output)
    assert res.ok, res.reason
    assert res.n_tokens == len(gen.tokens or [])
    assert res.first_divergence is None and res.stop_consistent and res.detokenizes_exactly
    assert res.details["closest_margin"] == pytest.approx(TOP_LP - SECOND_LP)
    call = fake_vllm.generate_calls[-1]
    assert call["params"] == {"temperature": 0.0, "seed": 5, "max_tokens": 1, "prompt_logprobs": 2}
    assert call["prompts"] == [{"prompt_token_ids": FakeTokenizer().encode(job.prompt) + (gen.tokens or [])}]
    assert len(fake_vllm.llm_instances) == 1


def test_score_finds_divergence(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL)
    gen = backend.generate(job)
    tokens = list(gen.tokens or [])
    assert len(tokens) > 3
    honest = tokens[2]
    tokens[2] = ord("Z")
    output = FakeTokenizer().decode(tokens, skip_special_tokens=True)
    res = backend.score(job, tokens, output)
    assert not res.ok
    assert res.first_divergence == 2
    assert (res.claimed_token, res.expected_token) == (ord("Z"), honest)
    assert (res.claimed_piece, res.expected_piece) == ("Z", chr(honest))
    assert res.margin == pytest.approx(TOP_LP - OTHER_LP)


def test_score_runner_up_margin(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL)
    tokens = list(backend.generate(job).tokens or [])
    prefix = FakeTokenizer().encode("hello") + tokens[:1]
    tokens[1] = runner_up(prefix)
    res = backend.score(job, tokens, FakeTokenizer().decode(tokens, skip_special_tokens=True))
    assert res.first_divergence == 1
    assert res.margin == pytest.approx(TOP_LP - SECOND_LP)


def test_score_truncated_claim_is_stop_inconsistent(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL)
    gen = backend.generate(job)
    tokens = (gen.tokens or [])[:-2]  # drop EOS and the last character: greedy decoding would go on
    res = backend.score(job, tokens, FakeTokenizer().decode(tokens))
    assert res.first_divergence is None
    assert not res.stop_consistent and not res.ok
    assert "greedy decoding goes on" in res.reason


def test_score_claim_without_eos_that_really_stopped(backend: VLLMBackend) -> None:
    # a server that strips EOS from token ids: the next greedy token must then end generation
    job = Job(prompt="hello", model=MODEL)
    gen = backend.generate(job)
    tokens = (gen.tokens or [])[:-1]
    res = backend.score(job, tokens, gen.output)
    assert res.ok, res.reason


def test_score_max_tokens(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL, max_tokens=3)
    gen = backend.generate(job)
    assert gen.finish_reason == "length"
    assert backend.score(job, gen.tokens or [], gen.output).ok
    longer = list(backend.generate(Job(prompt="hello", model=MODEL, max_tokens=5)).tokens or [])
    res = backend.score(job, longer, FakeTokenizer().decode(longer))
    assert not res.ok and not res.stop_consistent and "max_tokens is 3" in res.reason


def test_score_early_eos(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL)
    tokens = list(backend.generate(job).tokens or [])
    tokens.insert(1, EOS)
    res = backend.score(job, tokens, FakeTokenizer().decode(tokens, skip_special_tokens=True))
    assert not res.ok and not res.stop_consistent


def test_score_output_mismatch(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL)
    gen = backend.generate(job)
    res = backend.score(job, gen.tokens or [], gen.output + " ")
    assert res.first_divergence is None
    assert not res.detokenizes_exactly and not res.ok


def test_score_out_of_vocabulary(backend: VLLMBackend) -> None:
    res = backend.score(Job(prompt="hello", model=MODEL), [ord("a"), 0x110000 + 5], "a?")
    assert not res.ok and res.first_divergence == 1 and "vocabulary" in res.reason


def test_score_empty_claim(backend: VLLMBackend) -> None:
    # an empty output is valid only if greedy decoding ends at once
    job = Job(prompt="x.", model=MODEL)
    assert backend.generate(job).output == ""
    assert backend.score(job, [], "").ok
    assert not backend.score(Job(prompt="hello", model=MODEL), [], "").ok


def test_score_refuses_a_claim_that_fills_the_context(backend: VLLMBackend) -> None:
    job = Job(prompt="hi", model=MODEL, options={"ignore_eos": False})
    tokens = [ord("a")] * (MAX_MODEL_LEN - 3)
    with pytest.raises(BackendError, match="fill the model's context"):
        backend.score(job, tokens, "a" * len(tokens))


def test_score_refuses_options_it_cannot_account_for(backend: VLLMBackend) -> None:
    job = Job(prompt="hello", model=MODEL, options={"repetition_penalty": 1.2})
    with pytest.raises(BackendError, match="repetition_penalty; verify by rerun"):
        backend.score(job, [ord("a")], "a")
    neutral = Job(prompt="hello", model=MODEL, options={"repetition_penalty": 1.0})
    gen = backend.generate(neutral)
    assert backend.score(neutral, gen.tokens or [], gen.output).ok
