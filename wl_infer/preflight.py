"""Everything that can fail before the engine runs, checked before a job is claimed (issue 10).

The rig's key must be usable (a 0644 key used to fail only at signing, after the output was generated), the
job must fit this worker's limits, the backend must be installed and reachable and hold the model (with the
pinned weights), and on llama.cpp the context must fit the model's trained context and the memory limit, and
prompt + max_tokens the context — counted with a vocabulary-only load, before any context is allocated.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wl_infer.limits import JobRefused, Limits, check_job, limits_of

if TYPE_CHECKING:
    from board.service import Board
    from wl_infer.backends import Backend, ModelInfo
    from wl_infer.codec import Job
    from wl_infer.jobs import BackendPool

MIB = 1 << 20


def check_key(board: Board) -> None:
    """The rig's signing key loads (and is private to its owner) — else nothing generated could be submitted."""
    from board.keys import load_private_key

    load_private_key(board.home.path)


def preflight(board: Board, job: Job, pool: BackendPool, limits: Limits | None = None) -> None:
    """All pre-claim checks for one job on this rig; raises a one-line error (JobRefused for limits)."""
    check_key(board)
    limits = limits or limits_of(pool.config)
    check_job(job, limits)
    backend = pool.get(job.backend)
    info = backend.check_digest(job)  # installed, reachable, model present, weights as pinned
    fit(backend, job, limits, info)


def fit(backend: Backend, job: Job, limits: Limits, info: ModelInfo | None = None) -> None:
    """The checks that need the model's own facts (llama-cpp: its GGUF header and vocabulary)."""
    if backend.name == "llama-cpp":
        fit_llama(backend, job, info or backend.resolve(job.model), limits)
    elif backend.name == "ollama":
        fit_ollama(backend, job, limits)


def refusal(job: Job, pool: BackendPool) -> str | None:
    """Why this worker never runs the job (None: it fits); for a worker choosing what to claim."""
    from wl_infer.backends import BackendError

    limits = limits_of(pool.config)
    try:
        check_job(job, limits)
        fit(pool.get(job.backend), job, limits)
    except BackendError as e:  # a limit, or options the job gets wrong: the job alone decides, so for good
        return str(e)
    return None


def fit_llama(backend: Any, job: Job, info: ModelInfo, limits: Limits) -> None:
    """Trained context, memory estimate and token budget, from the GGUF header and a vocabulary-only load."""
    import importlib.util

    from wl_infer.backends.llama_cpp import INSTALL_HINT
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


def fit_ollama(backend: Any, job: Job, limits: Limits) -> None:
    """A job that sets num_ctx is held to the model's trained context as Ollama's /api/show reports it."""
    wanted = job.options.get("num_ctx")
    if not isinstance(wanted, int) or isinstance(wanted, bool):
        return
    shown = backend._call("showing the model", backend._get_client().show, job.model, for_model=job.model)
    info = getattr(shown, "modelinfo", None) or {}
    trained = next((v for k, v in info.items() if str(k).endswith(".context_length") and isinstance(v, int)), None)
    if trained is not None and wanted > trained:
        raise JobRefused(f"options.num_ctx is larger than {job.model}'s trained context (/api/show)", trained, wanted)


# --- a vocabulary-only load, kept per file (tokenizing needs no weights and no context) -----------------------
class _Vocabulary:
    """The parts of llama_cpp's _Engine that tokenizing and chat templates use, loaded with vocab_only."""

    def __init__(self, path: str) -> None:
        from wl_infer.backends.llama_cpp import _Engine, _import_llama

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
