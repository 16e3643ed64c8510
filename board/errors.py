"""Board errors: each carries its data and builds its own one-line message.

Domain code raises these; only the CLI turns them into exit codes and `wl: error: …` lines.
"""

from __future__ import annotations


class BoardError(Exception):
    """Base of every expected, user-facing failure."""

    exit_code = 1


class UsageError(BoardError):
    """Bad input that the user can fix by changing the command line."""

    exit_code = 2


class InvalidId(UsageError):
    def __init__(self, value: str, kind: str = "wanted item") -> None:
        super().__init__(f"invalid {kind} id {value!r}")
        self.value = value


class InvalidHandle(UsageError):
    def __init__(self, value: str) -> None:
        super().__init__(
            f"invalid handle {value!r} (use 1-32 characters: lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit)"
        )
        self.value = value


class NotFound(BoardError):
    def __init__(self, prefix: str, kind: str = "wanted item") -> None:
        super().__init__(f'no {kind} matching "{prefix}"')
        self.prefix = prefix


class Ambiguous(BoardError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (" …" if len(candidates) > 10 else "")
        super().__init__(f'"{prefix}" matches {len(candidates)} items: {shown}')
        self.prefix = prefix
        self.candidates = candidates


class RuleError(BoardError):
    """A lifecycle rule refused an operation (the precondition does not hold)."""


class WrongStatus(RuleError):
    def __init__(self, item_id: str, status: str, expected: str | tuple[str, ...], note: str = "") -> None:
        if isinstance(expected, str):
            want = f'"{expected}"'
        else:
            want = " or ".join(f'"{e}"' for e in expected)
        msg = f'wanted item {item_id} has status "{status}", expected {want}'
        super().__init__(msg + (f" ({note})" if note else ""))
        self.item_id = item_id
        self.status = status
        self.expected = expected


class AlreadyClaimed(WrongStatus):
    def __init__(self, item_id: str, holder: str, expires_at: str | None) -> None:
        note = f"claimed by {holder}" + (f" until {expires_at}" if expires_at else "")
        super().__init__(item_id, "claimed", "open", note)
        self.holder = holder
        self.expires_at = expires_at


class NotAllowed(RuleError):
    def __init__(self, item_id: str, handle: str, op: str, who: str) -> None:
        super().__init__(f"{handle} may not {op} wanted item {item_id}: only {who} may")
        self.item_id = item_id
        self.handle = handle
        self.op = op


class AlreadyApplied(RuleError):
    """Replaying an operation whose effect is already on the board."""


class NotRegistered(RuleError):
    def __init__(self, handle: str) -> None:
        super().__init__(f"rig {handle!r} is not registered on this board (run wl join)")
        self.handle = handle


class HandleTaken(RuleError):
    def __init__(self, handle: str, address: str) -> None:
        super().__init__(f"handle {handle!r} is already registered with another key ({address})")
        self.handle = handle
        self.address = address


class CorruptRecord(BoardError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt record {path}: {reason}")
        self.path = path
        self.reason = reason


class NotInitialised(BoardError):
    def __init__(self, home: str) -> None:
        super().__init__(f"no board in {home} (run wl init, or wl join URL --handle H)")
        self.home = home


class RemoteError(BoardError):
    """The remote could not be reached or refused us."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"remote {url}: {reason}")
        self.url = url
        self.reason = reason


class Unreachable(RemoteError):
    pass


class Contention(RemoteError):
    """Every compare-and-swap attempt lost to a concurrent writer."""

    def __init__(self, url: str, attempts: int) -> None:
        super().__init__(url, f"gave up after {attempts} attempts: the board kept changing under us")
        self.attempts = attempts


class ConfigError(UsageError):
    pass


class Archived(RuleError):
    """The item was archived: it is history now, no rule may change it (and its id cannot be reused)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"wanted item {item_id} is archived (completed or withdrawn long ago); it cannot change")
        self.item_id = item_id
