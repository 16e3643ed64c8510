"""What mutations and syncs did, as values (the CLI prints them; nothing here raises)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from board.ledger import Bad
from board.ops import Op


@dataclass
class MutationResult:
    op: Op
    result: dict[str, Any]
    commit: str
    pushed: bool
    local_reason: str | None = None
    attempts: int = 1
    sync: SyncReport | None = None


@dataclass
class Kept:
    op: Op
    commit: str
    reason: str
    path: str


@dataclass
class SyncReport:
    """What a sync did, as values: replayed, already applied, conflicted (with where it was kept), and what
    validation found: invalid commits (excluded, then repaired), a history rewrite and what was republished."""

    replayed: list[Op] = field(default_factory=list)
    already: list[Op] = field(default_factory=list)
    conflicted: list[Kept] = field(default_factory=list)
    pushed: bool = False
    head: str = ""
    attempts: int = 0
    invalid: list[Bad] = field(default_factory=list)
    repaired: bool = False
    vanished: list[str] = field(default_factory=list)
    republished: list[Op] = field(default_factory=list)
    unrepublished: list[tuple[Op, str]] = field(default_factory=list)
    checkpointed: bool = False
    folded: list[str] = field(default_factory=list)  # lane results this push carried into main (board/folds.py)

    def eventful(self) -> bool:
        return bool(self.replayed or self.already or self.conflicted or self.invalid or self.vanished
                    or self.republished or self.unrepublished or self.checkpointed)
