"""Verification: check the evidence against itself, reproduce it, compare, attest.

Evidence that contradicts itself (output vs hash, model or seed vs the job, a signature that is not the
worker's registered key) is INVALID without running anything. Otherwise the job is reproduced by regenerating
(`rerun`) or by scoring the claimed tokens in one forward pass (`prefill`), and the hashes are compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from board.api import (
    Board,
    BoardError,
    MutationResult,
    TreeView,
    fmt_time,
    known_addresses,
    refresh_if_online,
    utcnow,
)
from wl_infer.backends import BackendError
from wl_infer.backends.base import envelope_differences
from wl_infer.codec import Evidence, Job, bytes_hash, output_hash
from wl_infer.errors import CannotVerify, CodecError
from wl_infer.jobs import BackendPool, load_job
from wl_infer.outcomes import Verdict

VERIFIED, MISMATCH, INVALID = Verdict.VERIFIED, Verdict.MISMATCH, Verdict.INVALID
MODES = ("rerun", "prefill", "auto")


@dataclass
class VerifyResult:
    """A verification: the verdict, what was compared, and what was recorded."""

    verdict: Verdict
    item_id: str
    expected: str
    actual: str | None
    mode: str
    reason: str = ""
    claimed_output: str | None = None
    actual_output: str | None = None
    envelope_differences: list[str] = field(default_factory=list)
    divergence: dict[str, Any] | None = None
    attestation: dict[str, Any] | None = None
    mutation: MutationResult | None = None
    on_chain: str | None = None
    elapsed_s: float = 0.0
    weights: str | None = None  # "bound" (a digest pinned or recorded), "unbound" (none: a server reported none)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "item_id": self.item_id,
            "expected": self.expected,
            "actual": self.actual,
            "mode": self.mode,
            "reason": self.reason,
            "output": self.actual_output if self.actual_output is not None else self.claimed_output,
            "envelope_differences": self.envelope_differences,
            "divergence": self.divergence,
            "attestation": self.attestation,
            "recorded": self.mutation is not None,
            "pushed": self.mutation.pushed if self.mutation else None,
            "on_chain": self.on_chain,
            "elapsed_s": round(self.elapsed_s, 3),
            "weights": self.weights,
        }


@dataclass(frozen=True)
class ClaimedOutput:
    """The claimed output text and the hash of its bytes, read and hashed once per verification."""

    text: str
    digest: str


def claimed_output(view: TreeView, ev: Evidence) -> ClaimedOutput:
    """The claimed output, from the evidence or its content-addressed blob (checked against its name)."""
    if ev.output is not None:
        return ClaimedOutput(ev.output, output_hash(ev.output))
    assert ev.output_blob is not None
    raw = view.blob(ev.output_blob.removeprefix("sha256:"))
    if raw is None:
        raise CodecError(f"inference result: output blob {ev.output_blob} is missing from the board")
    digest = bytes_hash(raw)
    if digest != ev.output_blob:
        raise CodecError(f"inference result: output blob {ev.output_blob} does not match its name")
    try:
        return ClaimedOutput(raw.decode("utf-8"), digest)
    except UnicodeDecodeError:
        raise CodecError("inference result: output blob is not UTF-8") from None


def self_check(
    view: TreeView, job: Job, ev: Evidence, output: ClaimedOutput, completed_by: str, context: dict[str, str]
) -> str | None:
    """The reason the evidence contradicts itself, or None when it is consistent."""
    from wl_infer.signing import recover_signer

    if output.digest != ev.output_hash:
        return "the claimed output does not hash to the claimed output_hash"
    if ev.model != job.model:
        return f"evidence model {ev.model!r} is not the job's model {job.model!r}"
    if ev.seed != job.seed:
        return f"evidence seed {ev.seed} is not the job's seed {job.seed}"
    if ev.backend is not None and ev.backend != job.backend:
        return f"evidence backend {ev.backend!r} is not the job's backend {job.backend!r}"
    if ev.worker is not None and ev.worker != completed_by:
        return f"evidence names worker {ev.worker!r} but {completed_by!r} submitted it"
    rig = view.rig(completed_by)
    if rig is None:
        return f"worker {completed_by!r} is not registered on this board"
    known = known_addresses(rig)
    if ev.signature is None:
        if known:
            return f"evidence is not signed, but {completed_by} has a registered key"
        return None
    signer = recover_signer("evidence", ev.to_dict(), context)
    if signer is None or signer.lower() not in known:
        return f"the evidence signature is not {completed_by}'s registered key"
    return None


def claims_exact(backend: Any, ev: Evidence) -> bool:
    """Whether the evidence was made under the batch-invariant numerics this backend scores exactly."""
    numerics = getattr(backend, "exact_numerics", None)
    runtime = ev.envelope.get("runtime") if isinstance(ev.envelope, dict) else None
    return bool(numerics) and isinstance(runtime, dict) and runtime.get("numerics") == numerics


def choose_mode(backend: Any, ev: Evidence) -> str:
    """`auto`: prefill where the backend can score the claimed tokens and it is expected to be cheaper: always
    for evidence made under exact numerics (one pass decides), else up to the backend's length limit."""
    if not backend.can_score or ev.tokens is None:
        return "rerun"
    if claims_exact(backend, ev):
        return "prefill"
    limit = backend.prefill_auto_max_tokens
    return "prefill" if limit is None or len(ev.tokens) <= limit else "rerun"


def verify_item(
    board: Board,
    prefix: str,
    pool: BackendPool,
    *,
    mode: str = "auto",
    record: bool = True,
    push: bool = True,
) -> VerifyResult:
    if mode not in MODES:
        raise CannotVerify(f"unknown mode {mode!r}")
    if push:
        refresh_if_online(board)
    view = board.view()
    item_id = view.resolve(prefix)
    item = view.item(item_id)
    assert item is not None
    try:
        job = load_job(item)
    except BoardError as e:
        raise CannotVerify(str(e)) from None
    comp = view.completion(item_id)
    if comp is None:
        raise CannotVerify(f"wanted item {item_id} has no completion to verify (status {item.status})")
    context = {"board_id": view.meta()["board_id"], "item_id": item_id}
    started = time.perf_counter()
    try:
        ev = Evidence.decode(comp.evidence)
    except CodecError as e:
        verdict = VerifyResult(INVALID, item_id, "", None, mode, reason=str(e))
        return _finish(board, verdict, comp.id, comp.completed_by, None, context, record, push)
    try:
        claimed = claimed_output(view, ev)
        reason = self_check(view, job, ev, claimed, comp.completed_by, context)
    except CodecError as e:
        reason = str(e)
    if reason:
        verdict = VerifyResult(INVALID, item_id, ev.output_hash, None, mode, reason=reason, claimed_output=ev.output)
        return _finish(board, verdict, comp.id, comp.completed_by, None, context, record, push)
    output = claimed.text
    try:
        backend = pool.get(job.backend)
        chosen = mode
        if mode == "auto":
            chosen = choose_mode(backend, ev)
        if chosen == "prefill" and ev.tokens is None:
            raise CannotVerify("prefill needs the claimed token ids, and this evidence carries none (use --mode rerun)")
        mine = backend.envelope(job)
        if chosen == "prefill":
            assert ev.tokens is not None
            if getattr(backend, "exact_numerics", None) and not claims_exact(backend, ev):
                # evidence from batch-variant numerics: near-ties are tolerated, then confirmed by a rerun
                exact_scorer: Any = backend  # its score() also takes strict= (llama-cpp)
                score = exact_scorer.score(job, ev.tokens, output, strict=False)
            else:
                score = backend.score(job, ev.tokens, output)
            if score.ok and score.details.get("exact", True):
                verdict = VerifyResult(VERIFIED, item_id, ev.output_hash, ev.output_hash, chosen, claimed_output=output)
            elif score.ok:
                # Where batched logits drift from one-token decoding (evidence from older numerics, or an
                # engine that failed its batch-invariance check) the scorer tolerates near-ties; a near-tie
                # could also be a forged runner-up, so only a regeneration may call it VERIFIED.
                verdict = _rerun(backend, job, ev, output, item_id, "prefill+rerun")
                verdict.reason = verdict.reason or f"prefill near-ties at {score.details.get('near_ties')} confirmed by rerun"
            else:
                divergence = {
                    "position": score.first_divergence,
                    "claimed_token": score.claimed_token,
                    "expected_token": score.expected_token,
                    "claimed_piece": score.claimed_piece,
                    "expected_piece": score.expected_piece,
                    "margin": score.margin,
                }
                verdict = VerifyResult(
                    MISMATCH, item_id, ev.output_hash, None, chosen, reason=score.reason, claimed_output=output,
                    divergence=divergence,
                )
        else:
            verdict = _rerun(backend, job, ev, output, item_id, chosen)
    except BackendError as e:
        raise CannotVerify(f"could not verify {item_id}: {e}") from None
    if ev.envelope:
        verdict.envelope_differences = envelope_differences(ev.envelope, mine)
    verdict.weights = weights_binding(job, ev)
    verdict.elapsed_s = time.perf_counter() - started
    return _finish(board, verdict, comp.id, comp.completed_by, ev, context, record, push)


def weights_binding(job: Job, ev: Evidence) -> str:
    """Whether anything ties the result to particular weights: the job's pinned digest (checked by the worker's
    backend and by ours), or the digest the worker's backend recorded; an OpenAI-compatible server that reports
    none leaves the result unbound (the same output from the same-named model is all a rerun can show)."""
    recorded = ev.envelope.get("model_digest") if isinstance(ev.envelope, dict) else None
    return "bound" if job.model_digest or recorded else "unbound"


def _rerun(backend: Any, job: Job, ev: Evidence, output: str, item_id: str, mode: str) -> VerifyResult:
    """Regenerate and compare hashes; on a mismatch, name the first token where the two differ."""
    gen = backend.generate(job)
    actual = output_hash(gen.output)
    ok = actual == ev.output_hash
    divergence = None
    if not ok and ev.tokens is not None and gen.tokens is not None:
        pos = next(
            (i for i, (a, b) in enumerate(zip(ev.tokens, gen.tokens, strict=False)) if a != b),
            min(len(ev.tokens), len(gen.tokens)),
        )
        divergence = {
            "position": pos,
            "claimed_token": ev.tokens[pos] if pos < len(ev.tokens) else None,
            "expected_token": gen.tokens[pos] if pos < len(gen.tokens) else None,
        }
    verdict = VerifyResult(
        VERIFIED if ok else MISMATCH, item_id, ev.output_hash, actual, mode,
        reason="" if ok else "regenerated output differs", claimed_output=output,
        actual_output=gen.output, divergence=divergence,
    )
    return verdict


def _finish(
    board: Board,
    verdict: VerifyResult,
    completion_id: str,
    worker: str,
    ev: Evidence | None,
    context: dict[str, str],
    record: bool,
    push: bool,
) -> VerifyResult:
    if not record:
        return verdict
    from board.api import load_private_key
    from wl_infer.signing import evidence_hash, sign_record

    me = board.require_handle()
    att: dict[str, Any] = {
        "verdict": verdict.verdict,
        "item_id": verdict.item_id,
        "board_id": context["board_id"],
        "completion_id": completion_id,
        "worker": worker,
        "verifier": me,
        "mode": verdict.mode,
        "expected": verdict.expected or None,
        "actual": verdict.actual,
        "reason": verdict.reason or None,
        "envelope_match": not verdict.envelope_differences,
        "envelope_differences": verdict.envelope_differences,
        "first_divergence": verdict.divergence,
        "evidence_hash": evidence_hash(ev.unsigned_dict(), context) if ev is not None else None,
        "at": fmt_time(utcnow()),
    }
    att["signature"] = sign_record("attestation", att, context, load_private_key(board.home.path))
    verdict.attestation = att
    verdict.mutation = board.mutate(board.new_op("attest", verdict.item_id, record=att), push=push)
    return verdict
