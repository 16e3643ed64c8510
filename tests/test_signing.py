"""Canonical encoding and EIP-191 signatures: bound to kind, board and item; tolerant of garbage."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wl_infer.signing import (
    EncodingError,
    canonical_bytes,
    evidence_hash,
    recover_signer,
    sign_record,
    signed,
    verify_signature,
)

KEY = bytes.fromhex("11" * 32)
ADDRESS = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
OTHER_KEY = bytes.fromhex("22" * 32)
CONTEXT = {"board_id": "0123456789abcdef", "item_id": "w-abc1234567"}
EVIDENCE: dict[str, Any] = {
    "output": "The answer is 2.",
    "output_hash": "sha256:9f257ef08ce4a87bfbe460ce5a51e7d17ec4856ad13ebf5e44979318db98a8fe",
    "model": "llama3.2:1b",
    "seed": 42,
}
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_canonical_bytes_golden_vector() -> None:
    expected = (
        b'{"context":{"board_id":"0123456789abcdef","item_id":"w-abc1234567"},"kind":"evidence",'
        b'"record":{"model":"llama3.2:1b","output":"The answer is 2.","output_hash":'
        b'"sha256:9f257ef08ce4a87bfbe460ce5a51e7d17ec4856ad13ebf5e44979318db98a8fe","seed":42}}'
    )
    assert canonical_bytes("evidence", EVIDENCE, CONTEXT) == expected
    assert evidence_hash(EVIDENCE, CONTEXT) == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert evidence_hash(EVIDENCE, CONTEXT) == (
        "sha256:e2f7781bb43b38a4234cec97e19ad91cd98c50563460f72649b392dada6c9984"
    )


def test_signature_golden_vector() -> None:
    # RFC 6979 signing is deterministic, so this pins the whole scheme (encoding + EIP-191 prefix).
    assert sign_record("evidence", EVIDENCE, CONTEXT, KEY) == (
        "0x39d27cc2e4cdf923452307f2ca18a1700f55c6d30efe256debd93806ad6bd949"
        "76d8946fd9d0e60c6ad08cc8384b532018f97f3a5e61b2842b2be0083e2c4f581c"
    )


def test_canonical_bytes_ignore_key_order_and_keep_utf8() -> None:
    reordered = dict(reversed(list(EVIDENCE.items())))
    assert canonical_bytes("evidence", reordered, CONTEXT) == canonical_bytes("evidence", EVIDENCE, CONTEXT)
    data = canonical_bytes("evidence", {"output": "héllo wörld\n", "n": {"b": 1, "a": [2.5, None]}}, CONTEXT)
    assert "héllo wörld\\n".encode() in data
    assert b'"n":{"a":[2.5,null],"b":1}' in data
    assert b" " not in data.replace("héllo wörld".encode(), b"")


def test_round_trip() -> None:
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    assert recover_signer("evidence", record, CONTEXT) == ADDRESS
    assert verify_signature("evidence", record, CONTEXT, ADDRESS)
    assert verify_signature("evidence", record, CONTEXT, ADDRESS.lower())
    assert not verify_signature("evidence", record, CONTEXT, "0x" + "ab" * 20)


def test_signature_may_be_passed_beside_a_stripped_record() -> None:
    sig = sign_record("evidence", EVIDENCE, CONTEXT, KEY)
    assert recover_signer("evidence", EVIDENCE, CONTEXT) is None  # the stripped record carries none
    assert recover_signer("evidence", EVIDENCE, CONTEXT, signature=sig) == ADDRESS
    assert verify_signature("evidence", EVIDENCE, CONTEXT, ADDRESS, signature=sig)
    assert not verify_signature("evidence", {**EVIDENCE, "seed": 1}, CONTEXT, ADDRESS, signature=sig)


@pytest.mark.parametrize("field", sorted(EVIDENCE))
def test_altering_any_field_breaks_verification(field: str) -> None:
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    value = record[field]
    record[field] = value + 1 if isinstance(value, int) else value + " "
    assert not verify_signature("evidence", record, CONTEXT, ADDRESS)
    assert recover_signer("evidence", record, CONTEXT) != ADDRESS


def test_adding_or_removing_a_field_breaks_verification() -> None:
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    assert not verify_signature("evidence", {**record, "extra": None}, CONTEXT, ADDRESS)
    trimmed = {k: v for k, v in record.items() if k != "seed"}
    assert not verify_signature("evidence", trimmed, CONTEXT, ADDRESS)


@pytest.mark.parametrize(
    "context",
    [
        {"board_id": "0123456789abcdef", "item_id": "w-0000000000"},
        {"board_id": "fedcba9876543210", "item_id": "w-abc1234567"},
        {"board_id": "0123456789abcdef", "item_id": "w-abc1234567", "extra": "x"},
    ],
    ids=["other-item", "other-board", "extra-context"],
)
def test_signature_does_not_transfer_to_another_context(context: dict[str, str]) -> None:
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    assert not verify_signature("evidence", record, context, ADDRESS)


def test_kind_separates_evidence_from_attestations() -> None:
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    assert not verify_signature("attestation", record, CONTEXT, ADDRESS)
    attestation = signed("attestation", {"verdict": "VERIFIED"}, CONTEXT, KEY)
    assert verify_signature("attestation", attestation, CONTEXT, ADDRESS)


def test_signature_and_anchor_fields_are_excluded() -> None:
    plain = canonical_bytes("evidence", EVIDENCE, CONTEXT)
    decorated = {**EVIDENCE, "signature": "0xdead", "anchor": {"tx": "0x01", "block": 3}}
    assert canonical_bytes("evidence", decorated, CONTEXT) == plain
    assert evidence_hash(decorated, CONTEXT) == evidence_hash(EVIDENCE, CONTEXT)
    record = signed("evidence", EVIDENCE, CONTEXT, KEY)
    record["anchor"] = {"chain_id": 31337, "tx": "0x" + "ab" * 32}
    assert verify_signature("evidence", record, CONTEXT, ADDRESS)


def _high_s(signature: str) -> str:
    raw = bytearray(bytes.fromhex(signature[2:]))
    s = int.from_bytes(raw[32:64], "big")
    raw[32:64] = (SECP256K1_N - s).to_bytes(32, "big")
    raw[64] = 55 - raw[64]  # 27 <-> 28
    return "0x" + raw.hex()


@pytest.mark.parametrize(
    "bad",
    [
        None,
        123,
        b"\x00" * 65,
        "",
        "0x",
        "0x" + "zz" * 65,
        "0x" + "00" * 64,
        "0x" + "00" * 66,
        "0x" + "00" * 65,
        "0x" + "ff" * 65,
        "0x" + "11" * 64 + "00",
        "high-s",
    ],
)
def test_malformed_signatures_recover_to_none(bad: Any) -> None:
    if bad == "high-s":
        bad = _high_s(sign_record("evidence", EVIDENCE, CONTEXT, KEY))
    record = {**EVIDENCE, "signature": bad}
    assert recover_signer("evidence", record, CONTEXT) is None
    assert verify_signature("evidence", record, CONTEXT, ADDRESS) is False


def test_missing_signature_and_garbage_inputs_never_raise() -> None:
    assert recover_signer("evidence", EVIDENCE, CONTEXT) is None
    sig = sign_record("evidence", EVIDENCE, CONTEXT, KEY)
    assert recover_signer("evidence", {**EVIDENCE, "signature": sig}, {"board_id": 1}) is None
    assert recover_signer("nonsense", {**EVIDENCE, "signature": sig}, CONTEXT) is None
    assert recover_signer("evidence", {**EVIDENCE, "signature": sig, "x": float("nan")}, CONTEXT) is None
    assert recover_signer("evidence", None, CONTEXT) is None  # type: ignore[arg-type]
    record = {**EVIDENCE, "signature": sig}
    assert verify_signature("evidence", record, CONTEXT, "not an address") is False
    assert verify_signature("evidence", record, CONTEXT, None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "record", "context", "where"),
    [
        ("receipt", EVIDENCE, CONTEXT, "kind"),
        ("evidence", EVIDENCE, {"item_id": "w-1"}, "context.board_id"),
        ("evidence", EVIDENCE, {"board_id": "b", "item_id": ""}, "context.item_id"),
        ("evidence", {"x": float("nan")}, CONTEXT, "record.x"),
        ("evidence", {"x": {1: "a"}}, CONTEXT, "record.x"),
        ("evidence", {"x": b"bytes"}, CONTEXT, "record.x"),
        ("evidence", {"x": 2**70}, CONTEXT, "record"),
    ],
)
def test_unencodable_input_is_refused_with_its_location(
    kind: str, record: dict[str, Any], context: dict[str, Any], where: str
) -> None:
    with pytest.raises(EncodingError) as info:
        canonical_bytes(kind, record, context)
    assert info.value.where == where
    with pytest.raises(EncodingError):
        sign_record(kind, record, context, KEY)


_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_records = st.dictionaries(st.text(min_size=1, max_size=10), _json, max_size=6)
_ids = st.text(min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(record=_records, board=_ids, item=_ids, extra_key=st.text(min_size=1, max_size=10))
def test_property_sign_verify_and_tamper(record: dict[str, Any], board: str, item: str, extra_key: str) -> None:
    context = {"board_id": board, "item_id": item}
    sig_record = signed("evidence", record, context, KEY)
    assert verify_signature("evidence", sig_record, context, ADDRESS)
    assert not verify_signature("evidence", sig_record, {"board_id": board, "item_id": item + "x"}, ADDRESS)
    assert not verify_signature("evidence", sig_record, context, "0x" + "00" * 20)
    if extra_key not in ("signature", "anchor") and extra_key not in record:
        tampered = {**sig_record, extra_key: 0}
        assert not verify_signature("evidence", tampered, context, ADDRESS)
    wrong_key = signed("evidence", record, context, OTHER_KEY)
    assert not verify_signature("evidence", wrong_key, context, ADDRESS)
    # the encoding is a pure function of the data, not of insertion order
    reordered = dict(reversed(list(record.items())))
    assert canonical_bytes("evidence", reordered, context) == canonical_bytes("evidence", record, context)
