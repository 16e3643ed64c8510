"""Whether a job fits llama.cpp here: trained context, memory and token budget (issue 10).

Read from the GGUF header and a vocabulary-only load, so nothing is allocated for a job that cannot fit.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wl_infer.limits import JobRefused, Limits, check_job

if TYPE_CHECKING:
    from wl_infer.backends.base import ModelInfo
    from wl_infer.codec import Job

MIB = 1 << 20


def fit_llama(backend: Any, job: Job, info: ModelInfo, limits: Limits) -> None:
    """Trained context, memory estimate and token budget, from the GGUF header and a vocabulary-only load."""
    import importlib.util

    from wl_infer.backends.llama_engine import INSTALL_HINT
    from wl_infer.gguf_meta import read_facts

    if importlib.util.find_spec("llama_cpp") is None:  # installed? (without paying for the import)
        from wl_infer.backends import BackendUnavailable

        raise BackendUnavailable("llama-cpp", INSTALL_HINT)
    check_job(job, limits)
    settings = backend._settings(job, info)  # validates the job's options (one-line error when bad)
    n_ctx = settings.n_ctx
    facts = read_facts(settings.path)
    trained = facts.context_length
    if trained is not None and n_ctx > trained:
        raise JobRefused(f"options.n_ctx is larger than {job.model}'s trained context, "
                         f"{facts.architecture}.context_length", trained, n_ctx)  # fmt: skip
    per_token = facts.kv_bytes_per_token()
    if limits.max_memory_mb is not None and per_token is not None:
        need = (facts.file_size + n_ctx * per_token) // MIB + 1
        if need > limits.max_memory_mb:
            raise JobRefused(f"weights and a {n_ctx}-token KV cache need about {need} MiB, more than this worker "
                             "allows", f"{limits.max_memory_mb} MiB", f"{need} MiB")  # fmt: skip
    n_prompt = len(backend._prompt_ids(vocabulary(settings.path), job))
    if n_prompt >= n_ctx:
        raise JobRefused(f"the prompt is {n_prompt} tokens; the context holds {n_ctx}", n_ctx, n_prompt)
    if job.max_tokens and n_prompt + job.max_tokens > n_ctx:
        raise JobRefused(f"prompt ({n_prompt} tokens) + max_tokens ({job.max_tokens}) do not fit the context",
                         n_ctx, n_prompt + job.max_tokens)  # fmt: skip
    if not job.max_tokens and limits.max_tokens is not None and n_ctx - n_prompt > limits.max_tokens:
        raise JobRefused("max_tokens 0 lets it fill its context, more tokens than this worker allows",
                         limits.max_tokens, n_ctx - n_prompt)  # fmt: skip


# --- a vocabulary-only load, kept per file (tokenizing needs no weights and no context) -----------------------
class _Vocabulary:
    """The parts of llama_cpp's _Engine that tokenizing and chat templates use, loaded with vocab_only."""

    def __init__(self, path: str) -> None:
        from wl_infer.backends.llama_engine import _Engine, _import_llama

        _, lib = _import_llama()
        self.lib = lib
        params = lib.llama_model_default_params()
        params.vocab_only = True
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            from wl_infer.backends import BackendError

            raise BackendError("llama-cpp", f"could not read the vocabulary of {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(lib.llama_vocab_bos(self.vocab))
        self._tokenize = _Engine.tokenize

    def tokenize(self, text: str, parse_special: bool) -> list[int]:
        return list(self._tokenize(self, text, parse_special))  # type: ignore[arg-type]

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = ctypes.c_void_p(0)


_vocabularies: dict[tuple[str, int, int], _Vocabulary] = {}
_vocab_lock = threading.Lock()


def vocabulary(path: str) -> _Vocabulary:
    """A vocabulary-only model for the file, loaded once per process (keyed by path, size and mtime)."""
    st = Path(path).stat()
    key = (path, st.st_size, st.st_mtime_ns)
    with _vocab_lock:
        found = _vocabularies.get(key)
        if found is None:
            found = _vocabularies[key] = _Vocabulary(path)
        return found
