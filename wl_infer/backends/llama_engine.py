"""llama.cpp's engine as wl_infer drives it: one loaded model and context, its tokenizer, and llama_decode.

Split from llama_cpp.py (the backend): this module holds the settings that decide the numerics, the
batch-invariant decode (never a lone row: see llama_cpp.py's docstring, "batch-invariant-v1") and its
self-check on load.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from wl_infer.backends.base import (
    BackendError,
    BackendUnavailable,
)
from wl_infer.codec import Job

if TYPE_CHECKING:
    pass

DEFAULT_N_CTX = 2048
DEFAULT_N_BATCH = 512
# Thread count does not change the logits of llama.cpp's CPU kernels (checked bit for bit at 1 and 2
# threads); capped so that envelopes from machines with 5+ cores agree. One core is left free: llama.cpp's
# threads spin-wait on each other every token, so with one neighbour busy, threads = cores collapsed (2 threads
# on 2 cores: 3.8-6.8 tok/s, 1 thread: 35; tests/benchmarks/bench_threads.py).
MAX_DEFAULT_THREADS = 4
# Largest logit gap by which a claimed token may trail the batched argmax and still count as greedy, used only
# where the engine is not batch-invariant (its self-check failed) or the evidence predates exact numerics.
PREFILL_TOLERANCE = 2.5
SUPPORTED_OPTIONS = ("chat", "n_ctx", "n_batch", "temperature")
NUMERICS = "batch-invariant-v1"
MIN_ROWS = 2  # every llama_decode carries at least this many tokens
FILLER_TOKEN = 0  # fills a lone token's batch at the next position; masked from real rows, removed after
MAX_ENGINES = 2  # loaded (model, context) pairs kept per backend
INSTALL_HINT = "llama-cpp-python is not installed (pip install 'wl-infer[llama]')"

_log_lines: deque[str] = deque(maxlen=20)
_log_callback: Any = None  # keeps the ctypes callback alive for the life of the process


def _import_llama() -> tuple[ModuleType, ModuleType]:
    """Import llama-cpp-python lazily and silence llama.cpp's own stderr logging (kept for error messages)."""
    global _log_callback
    # ggml reads this once, at the first matmul of the process: no tiled K-quant kernel for 8+ rows
    os.environ["GGML_CPU_TILED_MM"] = "0"
    try:
        import llama_cpp
        from llama_cpp import llama_cpp as lib
    except ImportError:
        raise BackendUnavailable("llama-cpp", INSTALL_HINT) from None
    if _log_callback is None:

        @lib.llama_log_callback  # type: ignore[untyped-decorator]
        def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level in (2, 3):  # warn, error
                _log_lines.append(text.decode("utf-8", "replace").strip())

        _log_callback = _collect
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
    return llama_cpp, lib


def default_threads(configured: int | None = None) -> int:
    """The configured count (--threads, config `threads`), else the usable cores less one, 1 to 4.

    Not the load average: the count is recorded in the envelope, and the same machine should record the same
    one whatever else happens to run at the moment."""
    if configured:
        return max(1, int(configured))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores - 1))


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class Settings:
    """Runtime settings that decide the numerics; one loaded engine per distinct value."""

    path: str
    digest: str | None
    n_ctx: int
    n_batch: int
    n_threads: int


def _int_option(job: Job, key: str, default: int, low: int, high: int) -> int:
    value = job.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BackendError("llama-cpp", f"job option {key} must be an integer in [{low}, {high}]")
    return value


class _Engine:
    """One loaded model and context, reused across jobs with the same settings."""

    def __init__(self, lib: ModuleType, settings: Settings) -> None:
        self.lib = lib
        self.settings = settings
        self.batch: Any = None
        self.ctx: Any = None
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.load_mode = lib.LLAMA_LOAD_MODE_MMAP  # mmap only changes how bytes reach memory, not the numerics
        mp.use_extra_bufts = False  # no repacked weights: their kernels group rows by four
        self.model = lib.llama_model_load_from_file(settings.path.encode(), mp)
        if not self.model:
            raise BackendError("llama-cpp", f"could not load {settings.path}: {_last_log()}")
        cp = lib.llama_context_default_params()
        cp.n_ctx = settings.n_ctx + 1  # room for a filler token after the last position
        self.capacity = max(settings.n_batch, MIN_ROWS)
        cp.n_batch = self.capacity
        # one physical batch per logical batch: a prefill runs in as few passes as possible
        cp.n_ubatch = self.capacity
        cp.n_seq_max = 1
        cp.n_threads = settings.n_threads
        cp.n_threads_batch = settings.n_threads
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.offload_kqv = False
        cp.op_offload = False
        cp.embeddings = False
        cp.no_perf = True
        self.swa_full = bool(cp.swa_full)
        self.type_k, self.type_v = int(cp.type_k), int(cp.type_v)
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if not self.ctx:
            self.close()
            raise BackendError("llama-cpp", f"could not create a context for {settings.path}: {_last_log()}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        # llama.cpp may round the context up (to a multiple of 256); we hold jobs to the size they asked for
        allocated = int(lib.llama_n_ctx(self.ctx))
        if allocated < settings.n_ctx:
            self.close()
            raise BackendError(
                "llama-cpp", f"llama.cpp allocated a context of {allocated}, not {settings.n_ctx}"
            )
        self.n_ctx = settings.n_ctx
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(lib.llama_vocab_bos(self.vocab))
        self._eog_ids: frozenset[int] | None = None
        self.batch = lib.llama_batch_init(self.capacity, 0, 1)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._exact: bool | None = None

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    @property
    def eog_ids(self) -> frozenset[int]:
        """Every end-of-generation token id (a vocabulary scan, done once and only when scoring needs it)."""
        if self._eog_ids is None:
            self._eog_ids = frozenset(t for t in range(self.n_vocab) if self.is_eog(t))
        return self._eog_ids

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    # tokens -------------------------------------------------------------------------------------------

    def tokenize(self, text: str, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            buf = (self.lib.llama_token * cap)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, cap, self.add_bos, parse_special)
            if n >= 0:
                ids = list(buf[:n])
                break
            cap = -n
        if len(ids) >= 2 and ids[0] == ids[1] == self.bos:  # a template that writes <bos> itself: never two
            ids = ids[1:]
        return ids

    def piece(self, token: int, special: bool = False) -> bytes:
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self.lib.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
                if n >= 0:
                    cached = buf.raw[:n]
                    break
                size = -n
            self._pieces[key] = cached
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def show(self, token: int | None) -> str | None:
        """A token as a reader should see it (control tokens by name)."""
        if token is None:
            return None
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    # decoding ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[int], start: int, want: list[bool]) -> Any:
        """Evaluate tokens at positions start.. in one llama_decode; returns the logit rows of the wanted
        positions, in order, as a (k, n_vocab) float32 view valid until the next decode.

        A lone token is evaluated with a filler token at the next position (then removed from the cache), so
        that no layer's matmul ever sees a single row."""
        import numpy as np

        toks, flags = list(tokens), [bool(w) for w in want]
        filler = len(toks) < MIN_ROWS
        if filler:
            toks.append(FILLER_TOKEN)
            flags.append(False)
        b = self.batch
        b.n_tokens = len(toks)
        for i, tok in enumerate(toks):
            b.token[i] = tok
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = flags[i]
        rc = self.lib.llama_decode(self.ctx, b)
        if filler:
            self.forget(start + len(tokens))
        if rc != 0:
            raise BackendError("llama-cpp", f"llama_decode failed with status {rc}: {_last_log()}")
        produced = sum(flags)
        if not produced:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(produced, self.n_vocab))

    def forget(self, start: int) -> None:
        """Drop positions start.. from the cache (the filler after a lone token)."""
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), 0, start, -1)

    @property
    def exact(self) -> bool:
        """Whether this engine's logits are batch-invariant: checked once, on a fixed 9-token sequence (fewer
        where the batch size is smaller), by comparing one batch with the rows of 4-, 2-, 2- and 1-token
        decodes, bit for bit."""
        if self._exact is None:
            import numpy as np

            size = min(9, self.capacity)  # a batch of this engine never holds more
            probe = [self.bos if self.bos >= 0 else 2] + [(1000 + 7919 * i) % self.n_vocab for i in range(size - 1)]
            self.reset()
            whole = self.decode(probe, 0, [True] * size).copy()
            self.reset()
            parts = []
            bounds = sorted({min(b, size) for b in (0, 4, 6, 8, 9)})
            for start, end in zip(bounds, bounds[1:], strict=False):
                parts.append(self.decode(probe[start:end], start, [True] * (end - start)).copy())
            self.reset()
            self._exact = bool(np.array_equal(whole, np.concatenate(parts)))
        return self._exact


def _last_log() -> str:
    return _log_lines[-1] if _log_lines else "no detail from llama.cpp"


def _meta(lib: ModuleType, model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = lib.llama_model_meta_val_str(model, key.encode(), buf, 256)
    return buf.value.decode("utf-8", "replace") if n >= 0 else None
