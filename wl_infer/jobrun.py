"""One claimed job on a worker: is its model here, run it on a helper thread, give its claim back, and
watch its lease. Each piece does one thing; wl_infer.worker.Worker puts them together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from board.api import BoardError
from wl_infer.automation import Log

if TYPE_CHECKING:
    from board.api import Board, Home
    from wl_infer.codec import Job
    from wl_infer.jobs import BackendPool

RESOLVE_TTL_S = 120.0  # how long "this machine has (or lacks) model M" is trusted before asking again


class ModelCheck:
    """Whether this machine holds a job's model (and its pinned weights), asked of the pool's backend and cached."""

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool
        self._cache: dict[tuple[str, str], tuple[float, str | None, str | None]] = {}

    def problem(self, job: Job) -> str | None:
        from wl_infer.backends import BackendError

        key = (job.backend, job.model)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] > RESOLVE_TTL_S:
            try:
                cached = (time.monotonic(), self.pool.get(job.backend).resolve(job.model).digest, None)
            except BackendError as e:
                cached = (time.monotonic(), None, str(e))
            except Exception as e:  # noqa: BLE001 - an engine that cannot even look is one this machine lacks
                cached = (time.monotonic(), None, f"{job.backend}: {type(e).__name__}: {e}")
            self._cache[key] = cached
        _, digest, error = cached
        if error is not None:
            return error
        if job.model_digest and digest != job.model_digest:
            return f"pinned weights {job.model_digest} are not here ({job.backend} has {digest or 'no digest'})"
        return None


class Abandoned(Exception):
    """Raised inside the job thread at a checkpoint once the main thread has given the job up."""


class JobRun:
    """One job on a helper thread; the main thread may abandon it until submission has begun."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = threading.Event()  # also the job's cancel flag: the engine stops at its next token
        self._submitting = False

    def checkpoint(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if self._abandoned.is_set():
                raise Abandoned()
            if event == "generated":
                self._submitting = True  # from here on the job is finished, never abandoned
        self.log(event, **data)

    def abandon(self) -> bool:
        with self._lock:
            if self._submitting:
                return False
            self._abandoned.set()
            return True

    def start(self, work: Callable[[], Any], name: str) -> threading.Thread:
        def target() -> None:
            try:
                self.result = work()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which decides
                self.error = e
            finally:
                self.finished.set()

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread


def release_fresh(home: Home, item_id: str, push: bool) -> bool:
    """Release through a fresh board handle: the job thread may still hold the worker's one."""
    from board.api import Board, Home
    from wl_infer.jobs import release

    with Board(Home(home.path)) as b:
        return release(b, item_id, push)


class LeaseWatch:
    """Lease expiry as the renewals leave it in the local clone (read from a second handle, no network)."""

    def __init__(self, home: Home, me: str) -> None:
        self.home, self.me = home, me
        self._board: Board | None = None

    def expires(self, item_id: str) -> str | None:
        from board.api import Board, Home

        try:
            if self._board is None:
                self._board = Board(Home(self.home.path))
            item = self._board.view().item(item_id)
        except BoardError:
            return None
        return item.claim_expires_at if item is not None and item.claimed_by == self.me else None

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None
