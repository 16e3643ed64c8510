"""The wl-board/2 commit format: what a commit's message holds and exactly which bytes its signature covers.

A commit message is, byte for byte::

    wl: <op> [<id> ]by <handle>\\n
    \\n
    Wl-Op: <compact JSON of the operation>\\n
    Wl-Sig: 0x<130 hex: r ‖ s ‖ v>\\n

The signature is EIP-191 personal-sign by the acting rig's key over the canonical bytes::

    wl-commit/2\\n
    board:<board_id>\\n
    parent:<40 hex of the parent commit>\\n
    tree:<40 hex of the commit's tree>\\n
    op:<the Wl-Op JSON, exactly as in the message>\\n

so a signature binds one operation to one place in one board's history and to the state it produces.
Nothing here knows of validation rules; see board/ledger.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import orjson

from board.ops import TRAILER, Op

SIG_TRAILER = "Wl-Sig: "
DOMAIN = b"wl-commit/2"


class FormatError(ValueError):
    """A commit message that is not exactly a signed wl-board/2 message."""


def canonical_bytes(board_id: str, parent: bytes | None, tree: bytes, op_json: str) -> bytes:
    """The exact bytes a commit signature covers."""
    parent_hex = parent.decode("ascii") if parent else "none"
    return b"".join(
        [
            DOMAIN,
            b"\nboard:",
            board_id.encode("ascii"),
            b"\nparent:",
            parent_hex.encode("ascii"),
            b"\ntree:",
            tree,
            b"\nop:",
            op_json.encode("utf-8"),
            b"\n",
        ]
    )


def sign(private_key: bytes, board_id: str, parent: bytes | None, tree: bytes, op_json: str) -> str:
    from board.secp256k1 import eip191_hash, sign_hash

    digest = eip191_hash(canonical_bytes(board_id, parent, tree, op_json))
    return "0x" + sign_hash(digest, private_key).hex()


def signer(board_id: str, parent: bytes | None, tree: bytes, op_json: str, sig: str) -> str | None:
    """The address that made `sig` over these bytes; None for a garbled or malleable signature."""
    if not isinstance(sig, str) or len(sig) != 132 or not sig.startswith("0x"):
        return None
    if not all(isinstance(v, t) for v, t in ((board_id, str), (tree, bytes), (op_json, str))):
        return None
    if parent is not None and not isinstance(parent, bytes):
        return None
    return _recovered(board_id, parent, tree, op_json, sig)


@functools.lru_cache(maxsize=8192)
def _recovered(board_id: str, parent: bytes | None, tree: bytes, op_json: str, sig: str) -> str | None:
    """`signer`, remembered: recovery is a pure function of its inputs, and one signature is met several
    times (a lane claim as its lane is folded, again as the claim a `done` carries, again in a fold)."""
    from board.secp256k1 import SignatureError, eip191_hash, is_low_s, recover

    try:
        raw = bytes.fromhex(sig[2:])
    except ValueError:
        return None
    if sig[2:] != raw.hex() or not is_low_s(raw):  # one encoding per signature: lowercase hex, low s
        return None
    try:
        return recover(eip191_hash(canonical_bytes(board_id, parent, tree, op_json)), raw)
    except SignatureError:
        return None


def summary(op: Op) -> str:
    target = f" {op.id}" if op.id else ""
    return f"wl: {op.op}{target} by {op.by}"


def message(op_json: str, op: Op, sig: str) -> str:
    return f"{summary(op)}\n\n{TRAILER}{op_json}\n{SIG_TRAILER}{sig}\n"


@dataclass
class Signed:
    """A parsed signed commit message."""

    op: Op
    op_json: str
    sig: str


def parse_op_json(op_json: str) -> Op:
    """The operation in a Wl-Op JSON, which must be exactly its own canonical encoding."""
    try:
        data = orjson.loads(op_json)
    except orjson.JSONDecodeError:
        raise FormatError("its Wl-Op trailer is not JSON") from None
    if not isinstance(data, dict):
        raise FormatError("its Wl-Op trailer is not a JSON object")
    try:
        op = Op.from_dict(data)
    except Exception as e:  # noqa: BLE001 - any malformed field makes it no operation
        raise FormatError(f"its Wl-Op trailer is not a wl operation ({e})") from None
    if op.encode() != op_json:
        raise FormatError("its Wl-Op trailer is not in canonical form")
    return op


def parse(raw: bytes) -> Signed:
    """Parse a commit message; anything but the exact signed format is refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("its message is not UTF-8") from None
    parts = text.split("\n")
    if len(parts) != 5 or parts[1] != "" or parts[4] != "":
        raise FormatError("its message is not a signed wl operation (summary, Wl-Op and Wl-Sig lines)")
    if not parts[2].startswith(TRAILER) or not parts[3].startswith(SIG_TRAILER):
        raise FormatError("its message lacks the Wl-Op or Wl-Sig trailer")
    op_json = parts[2][len(TRAILER) :]
    op = parse_op_json(op_json)
    sig = parts[3][len(SIG_TRAILER) :]
    if parts[0] != summary(op):
        raise FormatError("its summary line does not match its operation")
    return Signed(op, op_json, sig)
