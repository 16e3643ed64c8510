"""Our small secp256k1/EIP-191 code must sign and recover exactly as eth_account does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board import secp256k1 as S

eth_account = pytest.importorskip("eth_account")
from eth_account.messages import encode_defunct  # noqa: E402

keys = st.integers(min_value=1, max_value=S.N - 1).map(lambda d: d.to_bytes(32, "big"))


@settings(max_examples=60, deadline=None)
@given(key=keys, message=st.binary(max_size=300))
def test_signatures_and_addresses_match_eth_account(key: bytes, message: bytes) -> None:
    theirs = eth_account.Account.sign_message(encode_defunct(primitive=message), private_key=key)
    ours = S.sign_hash(S.eip191_hash(message), key)
    assert ours == bytes(theirs.signature)
    address = eth_account.Account.from_key(key).address
    assert S.address_of(key) == address
    assert S.recover(S.eip191_hash(message), ours) == address


def test_a_tampered_signature_recovers_someone_else_or_fails() -> None:
    key = (12345).to_bytes(32, "big")
    sig = bytearray(S.sign_hash(S.eip191_hash(b"hello"), key))
    assert S.recover(S.eip191_hash(b"hello!"), bytes(sig)) != S.address_of(key)
    sig[64] = 29
    with pytest.raises(S.SignatureError):
        S.recover(S.eip191_hash(b"hello"), bytes(sig))
    with pytest.raises(S.SignatureError):
        S.recover(S.eip191_hash(b"hello"), bytes(32) + bytes(sig[32:64]) + b"\x1b")
    with pytest.raises(S.SignatureError):
        S.address_of(S.N.to_bytes(32, "big"))


def test_signing_does_not_import_eth_account() -> None:
    import subprocess
    import sys

    code = ("import sys, os; from board import secp256k1 as S; S.recover(S.eip191_hash(b'x'), "
            "S.sign_hash(S.eip191_hash(b'x'), os.urandom(31) + b'\\x01')); "
            "print(any(m.startswith(('eth_account', 'eth_utils', 'eth_keys')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
