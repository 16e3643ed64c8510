"""The web UI's one door into the board and the infer plugin.

Everything `wl serve` reads or does goes through this module, using the fewest and most public functions
(Board, its view, refresh, the codec's decoders, signature checks, and the same post/verify functions as the
CLI), so that when the board's internals move only this file needs re-pointing. Everything read here is
hostile input: records are validated by the board's decoders, and failures become values, never exceptions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.api import STATUSES, TYPES, Archived, Board, BoardError, Completion, Home, Item, Rig, default_home
from wl_infer.attestations import AttestationCheck, check_attestation
from wl_infer.codec import Evidence, Job, output_hash
from wl_infer.errors import CodecError
from wl_infer.plugins import backend_names

__all__ = ["backend_names", "STATUSES", "TYPES", "BoardSource", "Event", "Facts", "SourceError", "State", "output_hash"]

INFERENCE = "inference"
ROTATION_OPS = ("join", "rig-update", "rotate-key")
FULL_EVERY_S = 60.0


class SourceError(Exception):
    """The board could not be read or reached; the message is one user-facing line."""


@dataclass
class Facts:
    """What the board says about one item, decoded and checked (never raises: problems are fields)."""

    item: Item
    job: Job | None = None
    job_error: str | None = None
    completion: Completion | None = None
    evidence: Evidence | None = None
    evidence_error: str | None = None
    attestations: dict[str, dict[str, Any]] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)  # verifier -> attestation signature checks
    checks: dict[str, AttestationCheck] = field(default_factory=dict)  # verifier -> the same check as `infer status`

    @property
    def tokens(self) -> int | None:
        if self.evidence is None or self.evidence.tokens is None:
            return None
        return len(self.evidence.tokens)


@dataclass(frozen=True)
class Event:
    """One operation from the history (a commit's recorded op), in the board's own words."""

    commit: str
    op: str
    by: str
    at: str
    item_id: str | None
    args: dict[str, Any]


@dataclass
class State:
    """One head of the board: everything the pages list, read in one go."""

    head: str
    meta: dict[str, Any]
    facts: dict[str, Facts]
    rigs: dict[str, Rig]
    corrupt: list[str]
    new_events: list[Event]
    rewritten: bool  # the new head does not descend from the previous one (history rewritten)
    full_at: float = 0.0  # time.monotonic() of the last full listing
    rigs_changed: bool = True  # signature checks may differ from the previous state's
    lanes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # item id → its live claim lane's commits

    @property
    def commit(self) -> str:
        """Main's head (`head` also names the live claim lanes when there are any)."""
        return self.head.split("+", 1)[0]


class BoardSource:
    """One rig's local copy of the board, read under a lock (dulwich objects are not shared across threads)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Home(home or default_home())
        try:
            self.board = Board(self.home)
        except BoardError as e:
            raise SourceError(str(e)) from None
        self.lock = threading.RLock()

    @property
    def handle(self) -> str | None:
        return self.board.handle

    @property
    def has_remote(self) -> bool:
        return self.board.remote is not None

    def close(self) -> None:
        with self.lock:
            self.board.close()

    # --- replication ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Fetch the remote (the local branch follows when nothing is pending here).

        Through a Board of its own: the fetch may take seconds, and pages keep reading meanwhile.
        """
        try:
            with Board(self.home) as board:
                board.refresh()
        except BoardError as e:
            raise SourceError(str(e)) from None

    def head(self) -> str:
        """The version of the board the pages show: main's head, plus a digest of the live claim lanes (a claim
        on a lane changes what the pages show without moving main)."""
        with self.lock:
            try:
                return _version(self.board.head(), self.board.lanes())
            except BoardError as e:
                raise SourceError(str(e)) from None

    # --- reading one head -----------------------------------------------------------------------
    def read_state(self, previous: State | None) -> State:
        """The board at its head, re-reading only what changed since `previous`.

        When every new commit records its operation, only the items those operations name are re-read; a
        commit without one, a rewritten history, or FULL_EVERY_S since the last full read re-lists the board
        (so a hand-made commit is picked up within that time even before the ledger validates commits).
        """
        with self.lock:
            head = self.board.head()
            view = self.board.view()
            meta = view.meta()
            events, rewritten, foreign = self._events_since(head, previous.commit.encode() if previous else None)
            live = self.board.lanes()
            lanes = {i: tuple(c.decode() for c in lane.commits) for i, lane in live.items()}
            before = previous.lanes if previous is not None and not rewritten else {}
            for item_id, lane in live.items():  # a lane's operations, each once, as the item's history
                seen = set(before.get(item_id, ()))
                events += [Event(c.decode(), o.op, o.by, o.at, item_id, o.args)
                           for c, o in zip(lane.commits, lane.ops, strict=True) if c.decode() not in seen]  # fmt: skip
            touched = {e.item_id for e in events if e.item_id} | (lanes.keys() ^ before.keys())
            rig_change = rewritten or previous is None or foreign > 0 or any(e.op in ROTATION_OPS for e in events)
            rigs = {r.handle: r for r in view.rigs()} if rig_change or previous is None else previous.rigs
            full = previous is None or rewritten or foreign > 0 or time.monotonic() - previous.full_at > FULL_EVERY_S
            if full:
                facts, corrupt = self._all_facts(view, meta["board_id"], rigs, previous, touched, rewritten)
                full_at = time.monotonic()
            else:
                assert previous is not None
                facts, corrupt, full_at = dict(previous.facts), list(previous.corrupt), previous.full_at
                for item_id in sorted(touched):
                    try:
                        item = view.item(item_id)
                    except Archived:  # moved out of the live tree: gone from the listing, not corrupt
                        item = None
                    except BoardError as e:  # a corrupt record is listed, never fatal
                        facts.pop(item_id, None)
                        corrupt.append(getattr(e, "path", str(e)))
                        continue
                    if item is None:
                        facts.pop(item_id, None)
                    else:
                        facts[item_id] = self._facts(view, item, meta["board_id"], rigs)
            if rig_change:  # a key rotation can change which attestations check
                for item_id, f in facts.items():
                    if f.attestations and item_id not in touched:
                        self._check_all(view, f)
            return State(_version(head, live), meta, facts, rigs, corrupt, events, rewritten, full_at, rig_change,
                         lanes)

    def _all_facts(
        self, view: Any, board_id: str, rigs: dict[str, Rig], previous: State | None, touched: set[str], rewritten: bool
    ) -> tuple[dict[str, Facts], list[str]]:
        facts: dict[str, Facts] = {}
        for item in view.items():
            old = previous.facts.get(item.id) if previous and not rewritten else None
            if old is not None and old.item == item and item.id not in touched:
                facts[item.id] = old
            else:
                facts[item.id] = self._facts(view, item, board_id, rigs)
        return facts, list(view.corrupt)

    def _facts(self, view: Any, item: Item, board_id: str, rigs: dict[str, Rig]) -> Facts:
        facts = Facts(item)
        if item.type == INFERENCE:
            try:
                facts.job = Job.decode(item.description)
            except CodecError as e:
                facts.job_error = str(e)
        if item.status not in ("in_review", "completed"):
            return facts
        try:
            facts.completion = view.completion(item.id)
        except BoardError as e:
            facts.evidence_error = str(e)
            return facts
        if facts.completion is None:
            return facts
        if item.type == INFERENCE:
            try:
                facts.evidence = Evidence.decode(facts.completion.evidence)
            except CodecError as e:
                facts.evidence_error = str(e)
        facts.attestations = view.attestations(item.id)
        self._check_all(view, facts)
        return facts

    @staticmethod
    def _check_all(view: Any, facts: Facts) -> None:
        """Each attestation checked exactly as `wl infer status` checks it (wl_infer.attestations)."""
        facts.checks = {v: check_attestation(view, facts.item.id, v, a) for v, a in facts.attestations.items()}
        facts.signed = {v: c.valid for v, c in facts.checks.items()}

    def _events_since(self, head: bytes, since: bytes | None) -> tuple[list[Event], bool, int]:
        """The operations recorded since `since`, whether history was rewritten, and how many commits record none."""
        from board.api import folded_results, op_from_message

        store = self.board.store
        rewritten = since is not None and not store.is_ancestor(since, head)
        stop = None if since is None or rewritten else since
        out = []
        foreign = 0
        for sha in store.first_parent_chain(head, stop):
            message = store.commit(sha).message.decode("utf-8", "replace")
            op = op_from_message(message)
            if op is not None:
                for one in folded_results(op) if op.op == "fold" else [op]:  # a fold: each result it carries
                    carried = _carried_claim(one)
                    if carried is not None:  # the claim a done carried from its lane, as `wl log` shows it
                        out.append(Event(sha.decode(), carried.op, carried.by, carried.at, one.id, carried.args))
                    out.append(Event(sha.decode(), one.op, one.by, one.at, one.id, one.args))
            elif stop is not None:
                foreign += 1
        return out, rewritten, foreign

    # --- one item in full -----------------------------------------------------------------------
    def output_of(self, ev: Evidence) -> tuple[str | None, str | None]:
        """The claimed output (inline or from its content-addressed blob) and a problem, if any."""
        from wl_infer.verify import claimed_output

        with self.lock:
            try:
                return claimed_output(self.board.view(), ev).text, None
            except CodecError as e:
                return None, str(e)

    def self_check(self, facts: Facts) -> str | None:
        """Why the evidence contradicts itself (hash, model, seed, signature), or None when consistent."""
        from wl_infer.verify import claimed_output, self_check

        if facts.evidence is None or facts.job is None or facts.completion is None:
            return facts.evidence_error or facts.job_error
        context = {"board_id": self.board_id(), "item_id": facts.item.id}
        with self.lock:
            view = self.board.view()
            try:
                output = claimed_output(view, facts.evidence)
            except CodecError as e:
                return str(e)
            return self_check(view, facts.job, facts.evidence, output, facts.completion.completed_by, context)

    def board_id(self) -> str:
        with self.lock:
            return str(self.board.view().meta()["board_id"])

    def chain(self) -> dict[str, Any] | None:
        with self.lock:
            try:
                return self.board.view().chain()
            except BoardError:
                return None

    # --- acting as this rig (only with --allow-post) ------------------------------------------------
    def post_job(self, prompt: str, model: str, backend: str, seed: int, max_tokens: int, chat: bool) -> str:
        """Post an inference job exactly as `wl infer post` does; returns the new item id."""
        from wl_infer.jobs import open_pool, post_job

        job = Job(prompt=prompt, model=model, seed=seed, max_tokens=max_tokens, backend=backend,
                  options={"chat": True} if chat else {})
        with Board(self.home) as board, open_pool(board, timeout=5.0) as pool:
            return post_job(board, job, pool=pool).item_id

    def verify(self, item_id: str, mode: str) -> dict[str, Any]:
        """Verify a result as this rig and record the attestation, as `wl infer verify` does (runs the engine)."""
        from wl_infer.jobs import open_pool
        from wl_infer.verify import verify_item

        with Board(self.home) as board, open_pool(board) as pool:  # its own handle: reads go on meanwhile
            verdict = verify_item(board, item_id, pool, mode=mode, record=True, push=True)
        return verdict.to_dict()


def default_backend(source: BoardSource) -> str:
    return str(source.board.config.get("default_backend") or "llama-cpp")


def _version(head: bytes, lanes: dict[str, Any]) -> str:
    if not lanes:
        return head.decode()
    import hashlib

    digest = hashlib.sha256(repr(sorted((i, lane.tip) for i, lane in lanes.items())).encode()).hexdigest()
    return f"{head.decode()}+{digest[:12]}"


def _carried_claim(op: Any) -> Any:
    if op.op != "done" or not isinstance(op.args.get("lane"), dict):
        return None
    from board.api import lane_claim_of

    return lane_claim_of(op.args["lane"])
