"""Everything that can fail before the engine runs, checked before a job is claimed (issue 10).

The rig's key must be usable (a 0644 key used to fail only at signing, after the output was generated), the
job must fit this worker's limits, the backend must be installed and reachable and hold the model (with the
pinned weights), and on llama.cpp the context must fit the model's trained context and the memory limit, and
prompt + max_tokens the context — counted with a vocabulary-only load, before any context is allocated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wl_infer.limits import Limits, check_job, limits_of

if TYPE_CHECKING:
    from board.api import Board
    from wl_infer.backends import Backend, ModelInfo
    from wl_infer.codec import Job
    from wl_infer.jobs import BackendPool

MIB = 1 << 20


def check_key(board: Board) -> None:
    """The rig's signing key loads (and is private to its owner) — else nothing generated could be submitted."""
    from board.api import load_private_key

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
    """The checks that need the model's own facts (each backend knows its own: Backend.fit)."""
    backend.fit(job, limits, info)


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
