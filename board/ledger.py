"""The board as an authenticated ledger: every fetched commit is validated before anything reads it.

Validation walks the remote branch's first-parent chain, oldest first, from the last commit it validated. A
commit is valid when it has one parent, its message is exactly one signed operation (board/commits.py), the
signature is by the actor's key as registered in the validated state before it, the operation's time does
not go backwards nor lie more than MAX_SKEW ahead of this validator's clock, the rules (board/ops.py) accept
it with `now` = its own time, and applying it (changes plus its content-addressed attachments) yields exactly
the commit's tree.

The first commit that fails is excluded and reported; the state stays where it was (quarantine). Later
commits are still checked (their signature binds their real parent and tree) and, when the rules accept them
on the validated state, applied to it without the tree comparison. A signed `repair` commit whose tree
equals the validator's own state ends the quarantine. A rewrite of the branch is detected, the chain is
re-validated from its root, and the validated operations that vanished are kept for `republish`.

The validated state is cached in `ledger.json` (the commit, the state's tree, the last time, the authors'
latest signatures; written atomically, never a ref, so a pre-receive hook can keep one too), so a new commit
costs one signature recovery, one rule check and a look at the three trees on its paths.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from board import commits, layout, ops
from board.errors import BoardError
from board.ids import utcnow
from board.records import BOARD_FORMAT, LEGACY_FORMAT, board_meta, dumps, loads
from board.store import FILE_MODE, NewObjects, Store
from board.treecheck import TreeProblem, attachment_blobs, changed_paths, check_tree, strict_time
from board.view import TreeView

MAX_SKEW = 600  # seconds an operation may be dated ahead of the validating clock
CACHE_VERSION = 1


class InvalidBoard(BoardError):
    """The chain has no valid root: there is no board to validate against."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the remote is not a valid wl board: {reason}")
        self.reason = reason


class Invalid(Exception):
    """Why one commit fails validation."""


@dataclass
class Bad:
    """A commit validation excluded, as reported to the user."""

    commit: str
    reason: str
    author: str
    committer: str
    paths: list[str]

    def line(self) -> str:
        """One line, whatever the names hold: paths are board strings, escaped like every other."""
        from board.text import sanitize

        changed = ", ".join(sanitize(p) for p in self.paths) if self.paths else "nothing"
        return (
            f"commit {self.commit[:12]} is invalid ({sanitize(self.reason)}); author {sanitize(self.author)}, "
            f"committer {sanitize(self.committer)}; it changed {changed}"
        )


@dataclass
class Dropped:
    """A validated operation that a history rewrite removed: enough to re-publish it under its own signature."""

    commit: str
    parent: str | None
    tree: str
    op_json: str
    sig: str

    def op(self) -> ops.Op:
        return commits.parse_op_json(self.op_json)


@dataclass
class State:
    commit: str  # the last validated remote commit
    tree: str  # the validated state (equals the commit's tree unless in quarantine)
    at: str  # time of the last valid operation
    board_id: str
    legacy: bool = False  # a wl-board/1 board not checkpointed yet: its trees are taken as they are
    authors: dict[str, dict[str, Any]] = field(default_factory=dict)  # handle → {"at", "sigs"} (republish guard)
    excluded: list[Bad] = field(default_factory=list)  # invalid commits since the last healthy one
    dropped: list[Dropped] = field(default_factory=list)  # vanished validated operations, to republish
    vanished: list[str] = field(default_factory=list)  # commits the last rewrite removed
    root: str = ""  # the first commit: pinned, as is a wl-board/1 board's checkpoint
    checkpoint: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps({"version": CACHE_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, raw: bytes) -> State:
        d = orjson.loads(raw)
        if not isinstance(d, dict) or d.pop("version", None) != CACHE_VERSION:
            raise ValueError("not a ledger cache")
        d["excluded"] = [Bad(**b) for b in d.get("excluded", [])]
        d["dropped"] = [Dropped(**x) for x in d.get("dropped", [])]
        return cls(**d)


@dataclass
class Advance:
    """What one validation pass found."""

    checked: list[bytes] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


def registered_signer(view: TreeView, op: ops.Op) -> str:
    """Whose key must sign `op` on this state: the actor's registered key (a join: the key it registers)."""
    if op.op == "join":
        address = op.args.get("address")
        if not isinstance(address, str):
            raise Invalid("its join names no address")
        return address
    try:
        rig = view.rig(op.by)
    except BoardError as e:
        raise Invalid(str(e)) from None
    if rig is None:
        raise Invalid(f"{op.by} is not registered")
    return rig.address


class Ledger:
    def __init__(self, store: Store, cache_path: Path, skew: int = MAX_SKEW) -> None:
        self.store = store
        self.cache_path = cache_path
        self.skew = skew
        self._present: tuple[str, str] | None = None  # the last state whose commit and tree this store held

    # --- the cached state -------------------------------------------------------------------------
    def load(self) -> State | None:
        try:
            state = State.from_json(self.cache_path.read_bytes())
        except (OSError, ValueError, TypeError):
            return None
        pair = (state.commit, state.tree)
        if pair != self._present:  # each look on a miss scans every pack: once per state is enough
            if not self.store.has(state.commit.encode()) or not self.store.has(state.tree.encode()):
                return None
            self._present = pair  # one, not a set: a long-running worker sees a new state every commit
        return state

    def save(self, state: State) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(state.to_json())
        os.replace(tmp, self.cache_path)

    def healthy(self, state: State) -> bool:
        """Whether the validated state is exactly the remote's tree (no quarantine)."""
        return self.store.tree_id(state.commit.encode()).decode() == state.tree

    # --- validating -------------------------------------------------------------------------------
    def advance(self, head: bytes, save: bool = True) -> tuple[State, Advance]:
        """Validate the chain up to `head` (incrementally from the cache) and save the result."""
        state = self.load()
        report = Advance()
        if state is not None and state.commit.encode() == head:
            return state, report
        chain: list[bytes] | None = None
        if state is not None:
            chain = self._since(head, state.commit.encode())
            if chain is None:  # the branch no longer holds what we validated: a history rewrite
                state, report = self._rewritten(state, head)
                if save:
                    self.save(state)
                return state, report
        if state is None:
            full = self.store.first_parent_chain(head, None)
            state = self._root(full[0])
            chain = full[1:]
        assert chain is not None
        for sha in chain:
            self.step(state, sha, report)
        if save:
            self.save(state)
        return state, report

    def _since(self, head: bytes, base: bytes) -> list[bytes] | None:
        """Commits from base (exclusive) to head, oldest first; None when base is not on head's chain."""
        out: list[bytes] = []
        sha: bytes | None = head
        while sha is not None:
            if sha == base:
                out.reverse()
                return out
            out.append(sha)
            if not self.store.has(sha):
                return None
            parents = self.store.commit(sha).parents
            sha = parents[0] if parents else None
        return None

    def _rewritten(self, old: State, head: bytes) -> tuple[State, Advance]:
        full = self.store.first_parent_chain(head, None)
        on_chain = set(full)
        vanished: list[bytes] = []
        sha: bytes | None = old.commit.encode()
        while sha is not None and sha not in on_chain and self.store.has(sha):
            vanished.append(sha)
            parents = self.store.commit(sha).parents
            sha = parents[0] if parents else None
        vanished.reverse()
        excluded = {b.commit for b in old.excluded}
        state = self._root(full[0])
        report = Advance(vanished=[v.decode() for v in vanished])
        for c in full[1:]:
            self.step(state, c, report)
        if (old.root and state.root != old.root) or (old.checkpoint and state.checkpoint != old.checkpoint):
            # What validation starts from is trusted once, on first sight: a rewrite may not replace it.
            raise InvalidBoard(f"its history was replaced down to its {'root' if state.root != old.root else 'checkpoint'}")
        kept = {d.commit: d for d in old.dropped}
        for v in vanished:
            if v.decode() not in excluded:
                d = self._dropped(v)
                if d is not None:
                    kept.setdefault(d.commit, d)
        state.dropped = list(kept.values())
        state.vanished = report.vanished
        return state, report

    def _dropped(self, sha: bytes) -> Dropped | None:
        c = self.store.commit(sha)
        try:
            signed = commits.parse(c.message)
        except commits.FormatError:
            return None
        op = signed.op
        if op.op == "republish":  # a re-publication that vanished in turn: keep the original
            a = op.args
            try:
                return Dropped(str(a["commit"]), a.get("parent"), str(a["tree"]), str(a["op"]), str(a["sig"]))
            except KeyError:
                return None
        if op.op in ops.LEDGER_OPS:
            return None
        parent = c.parents[0].decode() if c.parents else None
        return Dropped(sha.decode(), parent, c.tree.decode(), signed.op_json, signed.sig)

    def _root(self, sha: bytes) -> State:
        c = self.store.commit(sha)
        if c.parents:
            raise InvalidBoard("its first commit has a parent")
        try:
            meta = check_tree(self.store, c.tree)
        except TreeProblem as e:
            raise InvalidBoard(str(e)) from None
        if meta.get("format") not in (BOARD_FORMAT, LEGACY_FORMAT):
            raise InvalidBoard(f"unknown format {str(meta.get('format'))[:40]!r}")
        legacy = meta["format"] == LEGACY_FORMAT
        if not legacy and [e.path for e in self.store.tree(c.tree).iteritems()] != [layout.BOARD.encode()]:
            raise InvalidBoard("its first commit holds more than board.json")
        created = str(meta.get("created_at", ""))
        try:
            strict_time(created)
        except ValueError:
            raise InvalidBoard("board.json has no valid created_at") from None
        return State(sha.decode(), c.tree.decode(), created, str(meta["board_id"]), legacy=legacy, root=sha.decode())

    def step(self, state: State, sha: bytes, report: Advance) -> None:
        """Validate one commit on `state` (which it advances); an invalid one is excluded and reported."""
        c = self.store.commit(sha)
        report.checked.append(sha)
        if state.legacy:
            self._legacy_step(state, sha)
            return
        healthy = self.healthy(state)
        try:
            try:
                new_tree = self._check(state, c, healthy)
            except (KeyError, ValueError, TypeError):  # a crafted tree: wrong object types, missing objects
                raise Invalid("its tree holds an object of the wrong type, or a missing one") from None
        except Invalid as e:
            parent = c.parents[0] if c.parents and self.store.has(c.parents[0]) else None
            try:
                paths = changed_paths(self.store, self.store.tree_id(parent) if parent else None, c.tree)
            except (KeyError, ValueError, TypeError):
                paths = ["(a tree that cannot be read)"]
            bad = Bad(sha.decode(), str(e), _ident(c.author), _ident(c.committer), paths)
            state.excluded.append(bad)
            report.bad.append(bad)
            state.commit = sha.decode()
            return
        state.commit = sha.decode()
        state.tree = new_tree.decode()
        if new_tree == c.tree:
            state.excluded = []

    def _check(self, state: State, c: Any, healthy: bool) -> bytes:
        if len(c.parents) != 1:
            raise Invalid("it is a merge commit" if c.parents else "it has no parent")
        try:
            signed = commits.parse(c.message)
        except commits.FormatError as e:
            raise Invalid(str(e)) from None
        op = signed.op
        when = self._time(state, op.at, monotonic=True)
        view = TreeView(self.store, state.tree.encode())
        expected = registered_signer(view, op)
        got = commits.signer(state.board_id, c.parents[0], c.tree, signed.op_json, signed.sig)
        if got is None or got.lower() != expected.lower():
            raise Invalid(f"it is not signed by {op.by}'s registered key")
        if op.op == "repair":
            if c.tree.decode() != state.tree:
                raise Invalid("its repair tree differs from the validated state")
            new_tree: bytes = c.tree
        elif op.op == "checkpoint":
            raise Invalid(f"a checkpoint on a board that is already {BOARD_FORMAT}")
        elif op.op == "republish":
            new_tree = self._republish(state, view, op, c.tree, healthy)
        else:
            new_tree = self._apply(state, view, op, when, c.tree, healthy)
        self._note_author(state, op.by, op.at, signed.sig)
        state.at = op.at
        return new_tree

    def _time(self, state: State, at: str, monotonic: bool) -> Any:
        try:
            when = strict_time(at)
        except ValueError:
            raise Invalid(f"its time {at[:40]!r} is not a valid UTC time") from None
        if monotonic and when < strict_time(state.at):
            raise Invalid(f"its time {at} is earlier than the previous operation's ({state.at})")
        if when > utcnow() + timedelta(seconds=self.skew):
            raise Invalid(f"its time {at} lies in the future")
        return when

    def _apply(self, state: State, view: TreeView, op: ops.Op, when: Any, tree: bytes, healthy: bool) -> bytes:
        try:
            applied = ops.apply(view, op, when)
        except Exception as e:  # noqa: BLE001 - a crafted operation may trip any rule; it is only refused
            raise Invalid(f"the rules refuse its {op.op}: {e}") from None
        try:
            carried = attachment_blobs(self.store, tree, op.attachments)
        except TreeProblem as e:
            raise Invalid(str(e)) from None
        changes = {**applied.changes, **carried}
        if healthy:
            same = self.store.tree_matches(state.tree.encode(), tree, changes)
            if same is False:
                raise Invalid(f"its tree is not what its {op.op} makes")
            if same:
                return tree
        new = NewObjects()
        new_tree = self.store.build_tree(state.tree.encode(), changes, new)
        if healthy and new_tree != tree:
            raise Invalid(f"its tree is not what its {op.op} makes")
        if new_tree != tree:
            self.store.save(new)  # a quarantined state exists only here
        else:
            self.store.remember(new)
        return new_tree

    def _republish(self, state: State, view: TreeView, op: ops.Op, tree: bytes, healthy: bool) -> bytes:
        a = op.args
        try:
            d = Dropped(str(a["commit"]), a.get("parent"), str(a["tree"]), str(a["op"]), str(a["sig"]))
            inner = d.op()
        except (KeyError, commits.FormatError) as e:
            raise Invalid(f"its republished operation is malformed ({e})") from None
        if inner.op in ops.LEDGER_OPS or op.attachments:
            raise Invalid("it republishes a ledger operation")
        when = self._time(state, inner.at, monotonic=False)
        expected = registered_signer(view, inner)
        parent = d.parent.encode() if isinstance(d.parent, str) else None
        got = commits.signer(state.board_id, parent, d.tree.encode(), d.op_json, d.sig)
        if got is None or got.lower() != expected.lower():
            raise Invalid(f"its republished {inner.op} is not signed by {inner.by}'s registered key")
        last = state.authors.get(inner.by)
        if last is not None and (inner.at < last["at"] or (inner.at == last["at"] and d.sig in last["sigs"])):
            raise Invalid(f"it replays an operation {inner.by} already superseded")
        new_tree = self._apply(state, view, inner, when, tree, healthy)
        self._note_author(state, inner.by, inner.at, d.sig)
        return new_tree

    @staticmethod
    def _note_author(state: State, handle: str, at: str, sig: str) -> None:
        last = state.authors.get(handle)
        if last is None or at > last["at"]:
            state.authors[handle] = {"at": at, "sigs": [sig]}
        elif at == last["at"]:
            last["sigs"].append(sig)

    # --- wl-board/1 ---------------------------------------------------------------------------------
    def _legacy_step(self, state: State, sha: bytes) -> None:
        """Before its checkpoint a wl-board/1 chain is taken as it is; the first valid checkpoint ends that."""
        c = self.store.commit(sha)
        state.commit = sha.decode()
        previous = state.tree
        state.tree = c.tree.decode()
        try:
            signed = commits.parse(c.message)
        except commits.FormatError:
            return
        if signed.op.op != "checkpoint" or len(c.parents) != 1:
            return
        try:
            expected = checkpoint_tree(self.store, previous.encode(), NewObjects())
            view = TreeView(self.store, previous.encode())
            got = commits.signer(state.board_id, c.parents[0], c.tree, signed.op_json, signed.sig)
            if c.tree != expected or got is None or got.lower() != registered_signer(view, signed.op).lower():
                return
            strict_time(signed.op.at)
        except (TreeProblem, Invalid, ValueError, BoardError):
            return
        state.legacy = False
        state.checkpoint = sha.decode()
        state.at = signed.op.at
        self._note_author(state, signed.op.by, signed.op.at, signed.sig)


def checkpoint_tree(store: Store, tree: bytes, new: NewObjects) -> bytes:
    """A wl-board/1 tree as wl-board/2: the same records (all well-formed) and board.json's new format."""
    meta = check_tree(store, tree)
    if meta.get("format") != LEGACY_FORMAT:
        raise TreeProblem(f"board.json's format is not {LEGACY_FORMAT}")
    entry = store.lookup(tree, layout.BOARD)
    assert entry is not None and entry[0] == FILE_MODE
    upgraded = {**loads(store.blob_text(entry[1])), "format": BOARD_FORMAT}
    upgraded.update({k: v for k, v in board_meta("", "", "").items() if k not in upgraded})
    return store.build_tree(tree, {layout.BOARD: dumps(upgraded)}, new)


def _ident(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:120]
