"""The surface of `board` that plugins (wl_infer) may use; everything else in board/ is internal.

A thin re-export layer: names resolve on first use (PEP 562), so importing this module costs no more than
`board.errors`, and `wl --help` never pays for dulwich. The helpers below are the only code here: facts about
board records that plugins would otherwise each work out again.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from board.errors import (
    AlreadyApplied,
    Ambiguous,
    Archived,
    BoardError,
    ConfigError,
    Contention,
    CorruptRecord,
    InvalidId,
    NotAllowed,
    NotFound,
    NotInitialised,
    NotRegistered,
    RemoteError,
    RuleError,
    Unreachable,
    UsageError,
    WrongStatus,
)

if TYPE_CHECKING:  # resolved lazily at run time, by __getattr__ below
    from board.folding import Courtesy, own_results
    from board.folds import carried as folded_results
    from board.home import Home, default_home
    from board.ids import check_item_id, fmt_time, new_completion_id, new_item_id, parse_time, utcnow
    from board.keys import KeyFileError, load_private_key
    from board.lanes import claim_of as lane_claim_of
    from board.layout import blob_path
    from board.ops import DEFAULT_LEASE, lease_expired, op_from_message
    from board.records import STATUSES, TYPES, Completion, Item, Rig
    from board.results import Kept, MutationResult, SyncReport
    from board.secp256k1 import N as SECP256K1_ORDER
    from board.secp256k1 import SignatureError, eip191_hash, recover, sign_hash
    from board.service import Board, create_commons, join
    from board.text import sanitize
    from board.view import TreeView

# name -> (module, attribute): resolved on first access and cached in this module's namespace.
_LAZY: dict[str, tuple[str, str]] = {
    "folded_results": ("board.folds", "carried"),
    "own_results": ("board.folding", "own_results"),
    "Courtesy": ("board.folding", "Courtesy"),
    "Home": ("board.home", "Home"),
    "default_home": ("board.home", "default_home"),
    "check_item_id": ("board.ids", "check_item_id"),
    "fmt_time": ("board.ids", "fmt_time"),
    "new_completion_id": ("board.ids", "new_completion_id"),
    "new_item_id": ("board.ids", "new_item_id"),
    "parse_time": ("board.ids", "parse_time"),
    "utcnow": ("board.ids", "utcnow"),
    "KeyFileError": ("board.keys", "KeyFileError"),
    "load_private_key": ("board.keys", "load_private_key"),
    "blob_path": ("board.layout", "blob_path"),
    "lane_claim_of": ("board.lanes", "claim_of"),
    "DEFAULT_LEASE": ("board.ops", "DEFAULT_LEASE"),
    "lease_expired": ("board.ops", "lease_expired"),
    "op_from_message": ("board.ops", "op_from_message"),
    "STATUSES": ("board.records", "STATUSES"),
    "TYPES": ("board.records", "TYPES"),
    "Completion": ("board.records", "Completion"),
    "Item": ("board.records", "Item"),
    "Rig": ("board.records", "Rig"),
    "SECP256K1_ORDER": ("board.secp256k1", "N"),
    "SignatureError": ("board.secp256k1", "SignatureError"),
    "eip191_hash": ("board.secp256k1", "eip191_hash"),
    "recover": ("board.secp256k1", "recover"),
    "sign_hash": ("board.secp256k1", "sign_hash"),
    "Board": ("board.service", "Board"),
    "Kept": ("board.results", "Kept"),
    "MutationResult": ("board.results", "MutationResult"),
    "SyncReport": ("board.results", "SyncReport"),
    "create_commons": ("board.service", "create_commons"),
    "join": ("board.service", "join"),
    "sanitize": ("board.text", "sanitize"),
    "TreeView": ("board.view", "TreeView"),
}

__all__ = [
    "AlreadyApplied",
    "Ambiguous",
    "Archived",
    "folded_results",
    "own_results",
    "Courtesy",
    "Board",
    "BoardError",
    "Completion",
    "ConfigError",
    "Contention",
    "CorruptRecord",
    "DEFAULT_LEASE",
    "Home",
    "InvalidId",
    "Item",
    "Kept",
    "KeyFileError",
    "MutationResult",
    "NotAllowed",
    "NotFound",
    "NotInitialised",
    "NotRegistered",
    "RemoteError",
    "Rig",
    "RuleError",
    "SECP256K1_ORDER",
    "STATUSES",
    "SignatureError",
    "SyncReport",
    "TYPES",
    "TreeView",
    "Unreachable",
    "UsageError",
    "WrongStatus",
    "blob_path",
    "check_item_id",
    "claim_lease",
    "create_commons",
    "default_home",
    "eip191_hash",
    "fmt_time",
    "join",
    "known_addresses",
    "lane_claim_of",
    "lease_expired",
    "load_private_key",
    "new_completion_id",
    "new_item_id",
    "op_from_message",
    "parse_time",
    "recover",
    "refresh_if_online",
    "sanitize",
    "sign_hash",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def known_addresses(rig: Rig) -> set[str]:
    """Lower-case addresses whose signatures count as this rig's: its key now and every key it rotated out."""
    previous = rig.extra.get("previous_addresses", [])
    found = {rig.address.lower()}
    for entry in previous if isinstance(previous, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            found.add(entry["address"].lower())
    found.discard("")
    return found


def claim_lease(config: dict[str, Any], minutes: int | None = None) -> int:
    """A claim's lease: the given minutes, else the config's `lease` (minutes), else the board's default."""
    value = minutes if minutes is not None else config.get("lease")
    if value is None:
        from board.ops import DEFAULT_LEASE

        return DEFAULT_LEASE
    return int(value) * 60


def refresh_if_online(board: Board) -> bool:
    """Fetch when the board has a remote; offline is not an error (the local copy is read instead)."""
    if board.remote is None:
        return False
    try:
        board.refresh()
    except RemoteError:
        return False
    return True

