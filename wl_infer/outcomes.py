"""Outcomes as types: what a verification says, what an audit found, how a worker's job ended.

StrEnums, so JSON documents and board records carry the same words as before (`"VERIFIED"`, `"done"`).
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """What re-running or re-scoring a result found."""

    VERIFIED = "VERIFIED"  # the hashes match
    MISMATCH = "MISMATCH"  # reproduced here, and it differs
    INVALID = "INVALID"  # the evidence contradicts itself or its job; nothing was run

    @property
    def exit_code(self) -> int:
        return 0 if self is Verdict.VERIFIED else 1


class AuditOutcome(StrEnum):
    """One audited completion: a verdict, or that it could not be checked here."""

    VERIFIED = "VERIFIED"
    MISMATCH = "MISMATCH"
    INVALID = "INVALID"
    COULD_NOT_VERIFY = "COULD-NOT-VERIFY"

    @property
    def key(self) -> str:
        """The counter it adds to in a worker's audit summary."""
        return _AUDIT_KEYS[self]


_AUDIT_KEYS = {
    AuditOutcome.VERIFIED: "verified",
    AuditOutcome.MISMATCH: "mismatched",
    AuditOutcome.INVALID: "invalid",
    AuditOutcome.COULD_NOT_VERIFY: "could_not_verify",
}


class JobOutcome(StrEnum):
    """How one job a worker took ended."""

    DONE = "done"  # evidence submitted (or saved, to submit again)
    FAILED = "failed"  # generation or submission failed
    ABANDONED = "abandoned"  # a signal arrived first: the claim was given back
    STOPPED = "stopped"  # asked to stop before a job was taken
