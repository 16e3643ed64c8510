"""Posting and running inference jobs on the board.

Uses only the board's public API (Board, ops, layout); backends come from a pool so a long-running worker
keeps its model loaded across jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from board.api import (
    Board,
    BoardError,
    Item,
    MutationResult,
    RuleError,
    WrongStatus,
    blob_path,
    claim_lease,
    new_completion_id,
    new_item_id,
    refresh_if_online,
    utcnow,
)
from wl_infer.backends import Backend, BackendConfig, BackendError, Generation, get_backend
from wl_infer.codec import INLINE_LIMIT, Evidence, Job, output_hash
from wl_infer.errors import CodecError, InferError
from wl_infer.text import one_line

TITLE_LIMIT = 60


class NotInference(InferError):
    def __init__(self, item_id: str, item_type: str) -> None:
        super().__init__(f'wanted item {item_id} is of type "{item_type}", not an inference job')
        self.item_id = item_id


class BadJob(InferError):
    def __init__(self, item_id: str, error: CodecError) -> None:
        super().__init__(f"wanted item {item_id}: {error}")
        self.item_id = item_id


class UnknownModel(InferError):
    """Posting a model the backend here answers it does not have: nobody here could run the job."""

    def __init__(self, backend: str, model: str, detail: str) -> None:
        super().__init__(f"{detail}; not posted (post it anyway with --force)")
        self.backend, self.model = backend, model


class RunFailed(InferError):
    def __init__(self, item_id: str, error: Exception, released: bool | None) -> None:
        tail = {True: "; the claim was released", False: "; the claim is kept (its lease will expire)", None: ""}[released]
        super().__init__(f"inference failed for {item_id}: {error}{tail}")
        self.item_id = item_id
        self.error = error
        self.released = released


class ResultKept(InferError):
    def __init__(self, item_id: str, reason: str, path: Path) -> None:
        super().__init__(f"result for {item_id} could not be submitted ({reason}); it is saved in {path}")
        self.path = path


def job_title(prompt: str) -> str:
    """`infer: ` + the prompt cut to 60 characters, `...` when cut (one line)."""
    return "infer: " + one_line(prompt, TITLE_LIMIT)


class BackendPool:
    """One backend instance per engine name, created on first use and kept (models stay loaded)."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._backends: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = get_backend(name, self.config)
        return self._backends[name]

    def close(self) -> None:
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self._backends.clear()


# --- post -------------------------------------------------------------------------------------------------
@dataclass
class PostResult:
    item_id: str
    job: Job
    mutation: MutationResult
    warnings: list[str] = field(default_factory=list)


def infer_backend(model: str, pool: BackendPool | None) -> str | None:
    """The backend a model belongs to when `--backend` is not given: the first registered backend that knows
    it here (its own registry, e.g. the embedded GGUF, then a reachable server that lists it); None if none."""
    from wl_infer.backends import backend_class, backend_names

    names = backend_names()
    for name in names:  # what a backend knows without asking a server: no network for the common case
        try:
            if backend_class(name).known_digest(model) is not None:
                return name
        except BackendError:
            continue
    if pool is None:
        return None
    for name in names:
        try:
            cls = backend_class(name)
            if cls.unavailable(pool.config) is None:
                pool.get(name).resolve(model)
                return name
        except (BackendError, ImportError):
            continue
    return None


def pin_digest(job: Job, pool: BackendPool | None, *, force: bool = False) -> tuple[Job, list[str]]:
    """Pin the model's weights digest when this machine can resolve it. A backend that answers but does not
    have the model refuses the post (nobody here could run it) unless `force`; an unreachable one warns."""
    if job.model_digest or pool is None:
        return job, []
    from wl_infer.backends import ModelNotFound, backend_class

    try:
        cls = backend_class(job.backend)
        digest = cls.known_digest(job.model) or pool.get(job.backend).resolve(job.model).digest
    except ModelNotFound as e:
        if not force:
            raise UnknownModel(job.backend, job.model, str(e)) from None
        return job, [f"not available locally: {e}; posted anyway (--force) without a pinned digest"]
    except BackendError as e:
        return job, [f"not available locally: {e}; posted without a pinned digest"]
    if digest is None:
        said = "did not report a digest" if cls.reports_digest else "reports no digest"
        return job, [f"{job.backend} {said} for {job.model!r}; posted without a pinned digest"]
    return dataclasses.replace(job, model_digest=digest), []


def post_job(
    board: Board,
    job: Job,
    *,
    push: bool = True,
    pool: BackendPool | None = None,
    force: bool = False,
    extra: Callable[[str], dict[str, Any]] | None = None,
) -> PostResult:
    """Post ``job``; ``extra(item_id)``, when given, adds top-level keys to the stored job (a bounty)."""
    from wl_infer.limits import check_model_name  # issue 10: no worker runs a job that names a file
    from wl_infer.sampling import check_backend

    check_model_name(job.backend, job.model)
    check_backend(job)  # a temperature the backend cannot honour is refused before anything is posted
    job, warnings = pin_digest(job, pool, force=force)
    title = job_title(job.prompt)
    item_id = new_item_id(title, utcnow())
    description = job.encode()
    if extra is not None:
        description = orjson.dumps({**extra(item_id), **job.to_dict()}).decode()
    op = board.new_op(
        "post",
        item_id,
        title=title,
        description=description,
        type="inference",
        priority=2,
        effort_level="small",
        tags=["inference", job.backend],
    )
    return PostResult(item_id, job, board.mutate(op, push=push), warnings)


# --- run --------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    item_id: str
    job: Job
    evidence: Evidence
    generation: Generation
    mutation: MutationResult
    claimed_here: bool
    completion_id: str


def load_job(item: Item) -> Job:
    if item.type != "inference":
        raise NotInference(item.id, item.type)
    try:
        return Job.decode(item.description)
    except CodecError as e:
        raise BadJob(item.id, e) from None


FRESH_S = 2.0  # a worker's board fetched this recently (its claim push just did) is not fetched again for the job


def _fresh_item(board: Board, prefix: str, reuse_fetch_s: float = 0.0) -> Item:
    """Fetch first (also under --no-push: reading is not publishing); offline, use the local copy. A caller that
    has just claimed the item (a worker: `reuse_fetch_s`) may read a board fetched that recently as it is:
    whatever changed since is judged when the result is published, as it would be anyway."""
    if board.fetched_at is None or time.monotonic() - board.fetched_at > reuse_fetch_s:
        refresh_if_online(board)
    return board.get_item(prefix)


class LeaseKeeper:
    """Renews this rig's claim while a long job runs, from its own thread and its own board handle."""

    def __init__(self, home: Any, item_id: str, lease_seconds: int, push: bool) -> None:
        self.home, self.item_id, self.lease, self.push = home, item_id, lease_seconds, push
        self.interval = max(1.0, lease_seconds / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{item_id}", daemon=True)
        self.renewals = 0
        self.errors: list[str] = []

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with Board(self.home) as board:
                    board.mutate(board.new_op("renew", self.item_id, lease_seconds=self.lease), push=self.push)
                self.renewals += 1
            except BoardError as e:
                self.errors.append(str(e))

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def results_dir(board: Board) -> Path:
    return board.home.path / "results"


def _save_result(board: Board, item_id: str, evidence: Evidence, blob: bytes | None) -> Path:
    """Written before the board commit: a crash or refused push never loses a completed result."""
    path = results_dir(board) / f"{item_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"item_id": item_id, "evidence": evidence.to_dict(), "blob": blob.decode("utf-8") if blob else None}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(record))
    os.replace(tmp, path)
    return path


def build_evidence(board: Board, item_id: str, job: Job, gen: Generation) -> tuple[Evidence, dict[str, bytes]]:
    """Evidence for a generation, signed with this rig's key; large outputs go to a content-addressed blob."""
    from board.api import load_private_key
    from wl_infer.signing import sign_record

    me = board.require_handle()
    ev = Evidence(
        output=gen.output,
        output_hash=output_hash(gen.output),
        model=job.model,
        seed=job.seed,
        backend=job.backend,
        envelope=gen.envelope,
        tokens=gen.tokens,
        worker=me,
    )
    raw = gen.output.encode("utf-8")
    if len(raw) > INLINE_LIMIT:
        ev.output = None
        ev.output_blob = ev.output_hash
    attachments = blob_attachments(ev, raw)
    context = {"board_id": board.meta()["board_id"], "item_id": item_id}
    ev.signature = sign_record("evidence", ev.unsigned_dict(), context, load_private_key(board.home.path))
    return ev, attachments


def blob_attachments(evidence: Evidence, raw: bytes | None) -> dict[str, bytes]:
    """The files a `done` commit carries: the output's content-addressed blob, when it lives in one."""
    if evidence.output_blob is None or raw is None:
        return {}
    return {blob_path(evidence.output_blob.removeprefix("sha256:")): raw}


def submit_evidence(
    board: Board, item_id: str, evidence: Evidence, attachments: dict[str, bytes], push: bool,
    completion_id: str | None = None,
) -> MutationResult:
    """The submit step of a run: one `done` commit carrying the signed evidence (and its blob)."""
    op = board.new_op("done", item_id, evidence=evidence.encode(), completion_id=completion_id or new_completion_id())
    return board.mutate(op, attachments=attachments, push=push)


def run_item(
    board: Board,
    prefix: str,
    pool: BackendPool,
    *,
    skip_claim: bool = False,
    push: bool = True,
    lease_seconds: int | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    submit_push: bool | None = None,
    before_publish: Callable[[str, Evidence], object] | None = None,
    reuse_fetch_s: float = 0.0,
) -> RunResult:
    """Claim (unless --skip-claim), generate, and submit signed evidence for one inference item.

    Pre-flight (key, limits, backend, model) runs before the claim; `cancel` stops the generation (a signal).
    `submit_push=False` commits the result locally for a later push (a worker's batch) while claims and lease
    renewals still follow `push`. ``before_publish(item_id, evidence)`` runs once the evidence is signed and
    before anything is saved or published (a bounty's on-chain commitment); if it raises, the result is neither
    saved nor published."""
    from wl_infer import limits as bounds  # issue 10: pre-flight, deadline, cancel
    from wl_infer.preflight import preflight
    from wl_infer.sampling import check_backend

    notify = on_event or (lambda event, data: None)
    item = _fresh_item(board, prefix, reuse_fetch_s)
    job = load_job(item)
    try:
        check_backend(job)  # before claiming: a job this backend cannot honour is left for others
    except BackendError as e:
        raise RunFailed(item.id, e, None) from None
    me = board.require_handle()
    lease = lease_seconds or claim_lease(board.config)
    if skip_claim:
        if item.status != "claimed":
            raise WrongStatus(item.id, item.status, "claimed", "--skip-claim runs only items already claimed for this rig")
        if item.claimed_by != me:
            raise RuleError(f"wanted item {item.id} is claimed by {item.claimed_by}, not by this rig ({me})")
    limits = bounds.limits_of(pool.config)
    try:
        preflight(board, job, pool, limits)
    except BackendError as e:
        if skip_claim:  # the claim exists already and belongs to whoever made it: keep it
            raise RunFailed(item.id, e, False) from None
        raise
    if cancel is not None and cancel.is_set():
        raise bounds.Cancelled()
    if not skip_claim:
        board.mutate(board.new_op("claim", item.id, lease_seconds=lease), push=push)
        notify("claimed", {"id": item.id, "lease_seconds": lease})
    try:
        backend = pool.get(job.backend)
        notify("generating", {"id": item.id, "backend": job.backend, "model": job.model})
        with LeaseKeeper(board.home, item.id, lease, push), bounds.bounded(limits, cancel):
            gen = backend.generate(job)
        if limits.max_output_bytes is not None and len(gen.output.encode("utf-8")) > limits.max_output_bytes:
            raise bounds.JobStopped("its output is larger than this worker submits", limits.max_output_bytes)
    except BackendError as e:
        released = False  # under --skip-claim the claim belongs to whoever claimed it: keep it
        if not skip_claim:
            released = release(board, item.id, push)
        raise RunFailed(item.id, e, released) from None
    notify("generated", {"id": item.id, "tokens": gen.n_tokens or 0, "elapsed_s": gen.elapsed_s})
    evidence, attachments = build_evidence(board, item.id, job, gen)
    if before_publish is not None:
        before_publish(item.id, evidence)
    saved = _save_result(board, item.id, evidence, next(iter(attachments.values()), None))
    completion_id = new_completion_id()
    try:
        publish = push if submit_push is None else submit_push and push
        mutation = submit_evidence(board, item.id, evidence, attachments, publish, completion_id)
    except BoardError as e:
        raise ResultKept(item.id, str(e), saved) from None
    saved.unlink(missing_ok=True)
    return RunResult(item.id, job, evidence, gen, mutation, not skip_claim, completion_id)


def release(board: Board, item_id: str, push: bool) -> bool:
    """Give a claim back after a failure; False when that could not be done (the lease will expire)."""
    try:
        board.mutate(board.new_op("unclaim", item_id, expected_claimer=board.handle), push=push)
        return True
    except BoardError:
        return False


@contextlib.contextmanager
def open_pool(board: Board, **flags: Any) -> Iterator[BackendPool]:
    from wl_infer.settings import backend_config

    pool = BackendPool(backend_config(board.home.path, board.config, **flags))
    try:
        yield pool
    finally:
        pool.close()
