"""The root of wl_infer's expected failures: every one is a BoardError, so `wl` decides the exit code in one
place (from `exit_code`) and prints one `wl: error:` line. Each error carries its data and builds its message.
"""

from __future__ import annotations

from board.api import BoardError, UsageError


class InferError(BoardError):
    """A runtime failure of an infer command (exit 1)."""


class InferUsageError(UsageError, InferError):
    """Bad input to an infer command that the user can fix (exit 2)."""


class CodecError(InferError, ValueError):
    """A job or evidence record that cannot be decoded; the message is user-facing."""


class CannotVerify(InferError):
    """Nothing to compare, or no way to reproduce it here (exit 3)."""

    exit_code = 3


class ChainUnavailable(InferError):
    """The chain libraries are not installed (they live in the `chain` extra)."""

    def __init__(self, missing: str) -> None:
        super().__init__("web3 is not installed: pip install 'wl-infer[chain]'")
        self.missing = missing
