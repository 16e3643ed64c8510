"""Canonical encoding and EIP-191 signatures for evidence and attestations.

Encoding (what gets signed and hashed)::

    canonical_bytes(kind, record, context) =
        orjson.dumps({"kind": kind, "context": context, "record": record minus "signature" and "anchor"},
                     option=OPT_SORT_KEYS)

i.e. compact UTF-8 JSON, object keys sorted by code point at every depth, no whitespace, non-ASCII written
as UTF-8 (not ``\\u`` escapes). ``kind`` ("evidence" or "attestation") separates the two domains, and
``context`` (``{"board_id": ..., "item_id": ...}``) binds the signature to one item on one board, so a
signed result cannot be replayed onto another item or board. The top-level ``signature`` and ``anchor``
keys are left out because they are added after signing. Floats use the shortest round-trip form; NaN,
infinities, non-string keys and integers beyond 64 bits are refused rather than encoded lossily.

A signature is EIP-191 version 0x45 ("\\x19Ethereum Signed Message:\\n" + length + bytes) over those bytes,
written as ``0x`` + 130 hex digits (r, s, v with v in {27, 28}); only low-s signatures (EIP-2) are accepted,
so each signed record has exactly one valid signature.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

KINDS = ("evidence", "attestation")
EXCLUDED_KEYS = frozenset({"signature", "anchor"})

_SIG_RE = re.compile(r"^0x[0-9a-fA-F]{130}\Z")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}\Z")


class EncodingError(ValueError):
    """A record or context cannot be encoded canonically (the path says where)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"cannot encode {where} canonically: {reason}")


def canonical_bytes(kind: str, record: Mapping[str, Any], context: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed and hashed; see the module docstring for the rules."""
    if kind not in KINDS:
        raise EncodingError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    for field in ("board_id", "item_id"):
        value = context.get(field)
        if not isinstance(value, str) or not value:
            raise EncodingError(f"context.{field}", "must be a non-empty string")
    body = {k: v for k, v in record.items() if k not in EXCLUDED_KEYS}
    document = {
        "kind": kind,
        "context": _plain(context, "context"),
        "record": _plain(body, "record"),
    }
    try:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise EncodingError("record", str(exc)) from None


def sign_record(kind: str, record: Mapping[str, Any], context: Mapping[str, Any], private_key: bytes) -> str:
    """EIP-191 signature of the record's canonical bytes, as ``0x`` + 130 hex digits."""
    from board.api import eip191_hash, sign_hash

    return "0x" + sign_hash(eip191_hash(canonical_bytes(kind, record, context)), private_key).hex()


def signed(
    kind: str, record: Mapping[str, Any], context: Mapping[str, Any], private_key: bytes
) -> dict[str, Any]:
    """A copy of ``record`` with its ``signature`` field set."""
    out = dict(record)
    out["signature"] = sign_record(kind, record, context, private_key)
    return out


def recover_signer(
    kind: str, record: Mapping[str, Any], context: Mapping[str, Any], signature: str | None = None
) -> str | None:
    """Checksummed address that signed the record, or None for a missing, garbled or high-s signature.

    The signature is ``record["signature"]`` unless given separately (for a record already stripped of
    it). Never raises on malformed input: verification reports INVALID, it does not crash.
    """
    try:
        if signature is None:
            signature = record.get("signature")
        if not isinstance(signature, str) or not _SIG_RE.match(signature):
            return None
        from board.api import SECP256K1_ORDER, eip191_hash, recover

        raw = bytes.fromhex(signature[2:])
        if int.from_bytes(raw[32:64], "big") > SECP256K1_ORDER // 2 or raw[64] not in (27, 28):
            return None

        return recover(eip191_hash(canonical_bytes(kind, record, context)), raw)
    except Exception:  # noqa: BLE001 - any failure to recover means "no valid signer"
        return None


def verify_signature(
    kind: str, record: Mapping[str, Any], context: Mapping[str, Any], address: str, signature: str | None = None
) -> bool:
    """True when the record carries (or ``signature`` is) a valid signature by ``address``, any letter case."""
    if not isinstance(address, str) or not _ADDR_RE.match(address):
        return False
    signer = recover_signer(kind, record, context, signature)
    return signer is not None and signer.lower() == address.lower()


def evidence_hash(record: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """``sha256:`` + hex digest of the evidence's canonical bytes: the hash anchored on chain."""
    return "sha256:" + hashlib.sha256(canonical_bytes("evidence", record, context)).hexdigest()


def _plain(value: Any, where: str) -> Any:
    """Copy into plain dict/list/scalars, refusing what JSON cannot carry exactly."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(where, f"object key {key!r} is not a string")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise EncodingError(where, f"{value!r} has no JSON form")
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise EncodingError(where, f"{type(value).__name__} is not a JSON value")
