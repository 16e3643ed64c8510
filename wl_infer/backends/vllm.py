"""The `vllm` backend: vLLM's offline `LLM` on a GPU, kept loaded across jobs (optional extra).

Determinism comes from greedy decoding (temperature 0, the job's seed), vLLM's batch-invariant kernels
(`VLLM_BATCH_INVARIANT=1`) and single-process scheduling (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), both set
before vLLM is first imported. Prefill verification scores the claimed tokens with prompt logprobs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from wl_infer.backends._http import SAMPLING_OPTIONS, client_platform, one_line, pick_options, wl_version
from wl_infer.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    BackendUnavailable,
    Generation,
    ModelInfo,
    ModelNotFound,
    ScoreResult,
)
from wl_infer.codec import Job

ENGINE_ENV = {"VLLM_BATCH_INVARIANT": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
INSTALL_HINT = "vLLM is not installed (pip install 'wl-infer[vllm]'; it needs a CUDA GPU)"
# Engine arguments a board's BackendConfig.extra may set, as "vllm_<name>".
_ENGINE_ARGS = ("dtype", "tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "enforce_eager")
# Options prompt logprobs cannot account for: they change the greedy choice (penalties, biases) or where
# generation ends (stop strings, ignore_eos). Jobs that set them are verified by rerun instead.
_UNSCORABLE = ("repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "stop",
               "stop_token_ids", "ignore_eos", "include_stop_str_in_output")  # fmt: skip
_NEUTRAL: dict[str, Any] = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
_NOT_FOUND_SIGNS = (
    "not a valid model identifier",
    "repository not found",
    "does not appear to have",
    "no such file",
)


class VLLMBackend(Backend):
    """Runs jobs in-process on vLLM; one model stays loaded until another is asked for or close()."""

    name = "vllm"
    can_score = True
    reports_digest = False
    requires = "vllm"
    install_hint = "vllm is not installed (pip install 'wl-infer[vllm]', needs a GPU)"

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._vllm: Any = None
        self._llm: Any = None
        self._model: str | None = None
        self._gpu: dict[str, Any] | None = None
        self._gpu_known = False

    # -- engine ---------------------------------------------------------------------------------------

    def _import(self) -> Any:
        if self._vllm is None:
            os.environ.update(ENGINE_ENV)  # read by vLLM at import and engine start
            try:
                import vllm
            except ImportError:
                raise BackendUnavailable(self.name, INSTALL_HINT) from None
            self._vllm = vllm
        return self._vllm

    def engine_args(self, model: str) -> dict[str, Any]:
        """Arguments for `vllm.LLM`: a fixed engine seed, so the envelope does not depend on job order."""
        extra = self.config.extra
        args: dict[str, Any] = {"model": model, "seed": int(extra.get("vllm_seed", 0))}
        args["dtype"] = extra.get("vllm_dtype", "auto")
        args["tensor_parallel_size"] = int(extra.get("vllm_tensor_parallel_size", 1))
        for name in _ENGINE_ARGS[2:]:
            if f"vllm_{name}" in extra:
                args[name] = extra[f"vllm_{name}"]
        return args

    def _engine(self, model: str) -> Any:
        if self._llm is not None and self._model == model:
            return self._llm
        vllm = self._import()
        self.close()
        try:
            self._llm = vllm.LLM(**self.engine_args(model))
        except Exception as exc:  # engine start failures come in many types; report one line
            message = one_line(exc)
            if isinstance(exc, OSError) or any(s in message.lower() for s in _NOT_FOUND_SIGNS):
                raise ModelNotFound(self.name, model, "a Hugging Face id or a local model folder") from None
            raise BackendError(self.name, f"could not load {model!r}: {message}") from None
        self._model = model
        return self._llm

    def _run(self, what: str, prompts: list[Any], params: Any) -> Any:
        try:
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(self.name, f"{what} failed: {one_line(exc)}") from None
        if not outputs or not outputs[0].outputs:
            raise BackendError(self.name, f"{what} failed: vLLM returned no output")
        return outputs[0]

    def sampling_args(self, job: Job) -> dict[str, Any]:
        """SamplingParams for the job; max_tokens None lets vLLM run to the model's limit (the default)."""
        args: dict[str, Any] = {"temperature": 0.0, "seed": job.seed, "max_tokens": job.max_tokens or None}
        args.update(pick_options(job.options, SAMPLING_OPTIONS))
        return args

    def gpu(self) -> dict[str, Any] | None:
        """GPU name, driver and CUDA version when torch sees one (cached; None on CPU-only machines)."""
        if not self._gpu_known:
            self._gpu_known = True
            try:
                import torch

                if torch.cuda.is_available():
                    major, minor = torch.cuda.get_device_capability(0)
                    self._gpu = {
                        "name": torch.cuda.get_device_name(0),
                        "count": torch.cuda.device_count(),
                        "capability": f"{major}.{minor}",
                        "cuda": torch.version.cuda,
                        "driver": _driver_version(),
                    }
            except Exception:  # no torch, no driver, a broken CUDA setup: the envelope says no GPU
                self._gpu = None
        return self._gpu

    # -- Backend interface ----------------------------------------------------------------------------

    def resolve(self, model: str) -> ModelInfo:
        self._engine(model)
        return ModelInfo(name=model, digest=None)

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(name=self._model, digest=None)] if self._model else []

    def envelope(self, job: Job) -> dict[str, Any]:
        llm = self._engine(job.model)
        args = self.engine_args(job.model)
        dtype = getattr(_model_config(llm), "dtype", None)
        return {
            "backend": self.name,
            "backend_version": getattr(self._vllm, "__version__", None),
            "model": job.model,
            "model_digest": None,
            "dtype": str(dtype) if dtype is not None else args["dtype"],
            "tensor_parallel_size": args["tensor_parallel_size"],
            "engine_args": {
                k: v for k, v in args.items() if k not in ("model", "dtype", "tensor_parallel_size")
            },
            "batch_invariant": _batch_invariant_active(),
            "multiprocessing": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0",
            "sampling": self.sampling_args(job),
            "gpu": self.gpu(),
            "platform": client_platform(),
            "wl_infer_version": wl_version(),
        }

    def generate(self, job: Job) -> Generation:
        self.check_digest(job)
        envelope = self.envelope(job)
        params = self._vllm.SamplingParams(**self.sampling_args(job))
        started = time.monotonic()
        out = self._run("generation", [job.prompt], params)
        elapsed = time.monotonic() - started
        completion = out.outputs[0]
        prompt_ids = getattr(out, "prompt_token_ids", None)
        return Generation(
            output=completion.text,
            tokens=[int(t) for t in completion.token_ids],
            envelope=envelope,
            finish_reason="length" if completion.finish_reason == "length" else "stop",
            prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
            elapsed_s=elapsed,
        )

    def score(self, job: Job, tokens: list[int], output: str) -> ScoreResult:
        """Teacher-force prompt + claimed tokens once and check each claimed token is the greedy choice.

        vLLM's prompt logprobs give, at every position, the logprob of the token there and of the top
        candidates; a claimed token that is not rank 1 is where the claim diverges from greedy decoding.
        Logprob differences equal logit differences (same normaliser), so `margin` is in logits.
        """
        blocking = [
            k for k in _UNSCORABLE if job.options.get(k) not in (None, _NEUTRAL.get(k), {}, [], False)
        ]
        if blocking:
            raise BackendError(
                self.name,
                f"prefill scoring cannot account for the job's {', '.join(blocking)}; verify by rerun",
            )
        self.check_digest(job)
        llm = self._engine(job.model)
        started = time.monotonic()
        tokenizer = llm.get_tokenizer()
        vocab = len(tokenizer)
        bad = next((i for i, t in enumerate(tokens) if not 0 <= t < vocab), None)
        if bad is not None:
            return ScoreResult(
                ok=False, n_tokens=len(tokens), first_divergence=bad, claimed_token=tokens[bad],
                reason=f"claimed token {tokens[bad]} at position {bad} is outside the vocabulary ({vocab})",
            )  # fmt: skip
        prompt_ids = [int(t) for t in tokenizer.encode(job.prompt)]
        context = getattr(_model_config(llm), "max_model_len", None)
        if isinstance(context, int) and len(prompt_ids) + len(tokens) >= context:
            raise BackendError(
                self.name,
                f"prompt and claim fill the model's context ({context} tokens), too long to score; verify by rerun",
            )
        params = self._vllm.SamplingParams(temperature=0.0, seed=job.seed, max_tokens=1, prompt_logprobs=2)
        out = self._run("scoring", [{"prompt_token_ids": prompt_ids + list(tokens)}], params)
        logprobs = out.prompt_logprobs or []
        result = _check_positions(logprobs, len(prompt_ids), tokens)
        result.elapsed_s = time.monotonic() - started
        if result.claimed_token is not None and result.expected_token is not None:
            result.claimed_piece = tokenizer.decode([result.claimed_token])
            result.expected_piece = tokenizer.decode([result.expected_token])

        eos = {t for t in (getattr(tokenizer, "eos_token_id", None),) if t is not None}
        body = tokens[:-1] if tokens and tokens[-1] in eos else list(tokens)
        early_eos = next((i for i, t in enumerate(body) if t in eos), None)
        if early_eos is not None:
            result.stop_consistent = False
            result.reason = result.reason or f"end-of-sequence at position {early_eos}, yet the claim goes on"
        elif job.max_tokens and len(body) > job.max_tokens:
            result.stop_consistent = False
            result.reason = result.reason or f"{len(body)} tokens claimed, but max_tokens is {job.max_tokens}"
        elif len(body) == len(tokens) and not (job.max_tokens and len(body) == job.max_tokens):
            # the claim stopped on its own, before max_tokens: greedy decoding must end here too
            nxt = out.outputs[0]
            result.details["next_token"] = list(nxt.token_ids)[:1]
            if nxt.finish_reason != "stop":
                result.stop_consistent = False
                result.reason = result.reason or "the claimed output stops where greedy decoding goes on"
        result.detokenizes_exactly = tokenizer.decode(body, skip_special_tokens=True) == output
        if not result.detokenizes_exactly:
            result.reason = result.reason or "the claimed tokens do not detokenize to the claimed output"
        result.ok = result.first_divergence is None and result.stop_consistent and result.detokenizes_exactly
        return result

    def close(self) -> None:
        """Drop the loaded model so its GPU memory can be freed."""
        self._llm = None
        self._model = None


def _check_positions(logprobs: list[Any], offset: int, tokens: list[int]) -> ScoreResult:
    """Walk the claimed positions of a prompt-logprobs list; stop at the first non-greedy token."""
    closest: float | None = None
    for j, claimed in enumerate(tokens):
        pos = offset + j
        entry = logprobs[pos] if pos < len(logprobs) else None
        if not entry or claimed not in entry:
            return ScoreResult(
                ok=False, n_tokens=len(tokens), first_divergence=j, claimed_token=claimed,
                reason=f"vLLM returned no logprob for claimed position {j}",
            )  # fmt: skip
        best_id, best = max(entry.items(), key=lambda kv: (kv[1].logprob, -kv[0]))
        got = entry[claimed].logprob
        if got < best.logprob:
            return ScoreResult(
                ok=False, n_tokens=len(tokens), first_divergence=j, claimed_token=claimed,
                expected_token=int(best_id), margin=float(best.logprob - got),
                reason=f"token {j} is not the greedy choice",
            )  # fmt: skip
        others = [lp.logprob for t, lp in entry.items() if t != claimed]
        if others:
            gap = float(got - max(others))
            closest = gap if closest is None else min(closest, gap)
    details: dict[str, Any] = {"closest_margin": closest}
    return ScoreResult(ok=True, n_tokens=len(tokens), details=details)


def _batch_invariant_active() -> bool:
    """What vLLM itself reports (some versions read the variable once, at import), else the variable."""
    try:
        from vllm.model_executor.layers.batch_invariant import vllm_is_batch_invariant

        return bool(vllm_is_batch_invariant())
    except Exception:  # older/newer layouts, or the module cannot load: fall back to the environment
        return os.environ.get("VLLM_BATCH_INVARIANT") == "1"


def _model_config(llm: Any) -> Any:
    """vLLM's ModelConfig of a loaded LLM (None where a version keeps it elsewhere)."""
    return getattr(getattr(llm, "llm_engine", None), "model_config", None)


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            value = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:  # pynvml missing or no NVML: the driver is simply not recorded
        return None
