"""secp256k1 ECDSA with Ethereum's EIP-191 personal-sign, through coincurve (libsecp256k1).

Every commit `wl` writes is signed and every fetched commit is verified, so this must be fast and safe:
libsecp256k1 signs in constant time with RFC 6979 nonces and low s, in about 0.02 ms. The results are byte for
byte those of eth_account (v ∈ {27, 28}; tests compare the two), without eth_account's ~0.65 s import.
"""

from __future__ import annotations

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SignatureError(ValueError):
    """A signature or key that is not valid on secp256k1."""


def keccak256(data: bytes) -> bytes:
    from Crypto.Hash import keccak  # pycryptodome: imports in milliseconds

    return keccak.new(digest_bits=256, data=data).digest()


def _checksum(raw_hex: str) -> str:
    """EIP-55 mixed-case form of a 40-hex address."""
    mask = keccak256(raw_hex.encode()).hex()
    return "0x" + "".join(c.upper() if int(m, 16) >= 8 else c for c, m in zip(raw_hex, mask[:40], strict=True))


def address_of_public(uncompressed: bytes) -> str:
    """EIP-55 checksummed address of a 65-byte uncompressed public key (0x04 ‖ x ‖ y)."""
    return _checksum(keccak256(uncompressed[1:])[-20:].hex())


def address_of_point(point: tuple[int, int]) -> str:
    """EIP-55 checksummed address of a public key given as affine (x, y)."""
    return address_of_public(b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big"))


def _private(private_key: bytes) -> object:
    from coincurve import PrivateKey

    if len(private_key) != 32 or not 0 < int.from_bytes(private_key, "big") < N:
        raise SignatureError("a private key is 32 bytes, 0 < key < n")
    return PrivateKey(private_key)


def address_of(private_key: bytes) -> str:
    key = _private(private_key)
    return address_of_public(key.public_key.format(compressed=False))  # type: ignore[attr-defined]


def eip191_hash(message: bytes) -> bytes:
    """Personal-sign (version 0x45) hash: what `encode_defunct` + `sign_message` sign."""
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def sign_hash(digest: bytes, private_key: bytes) -> bytes:
    """65 bytes r ‖ s ‖ v with low s and v ∈ {27, 28}."""
    if len(digest) != 32:
        raise SignatureError("a digest is 32 bytes")
    sig: bytes = _private(private_key).sign_recoverable(digest, hasher=None)  # type: ignore[attr-defined]
    return sig[:64] + bytes([27 + sig[64]])


def recover(digest: bytes, signature: bytes) -> str:
    """The address whose key made `signature` over `digest` (SignatureError when impossible)."""
    from coincurve import PublicKey

    if len(signature) != 65 or signature[64] not in (27, 28):
        raise SignatureError("a signature is 65 bytes ending in v = 27 or 28")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < N and 0 < s < N):
        raise SignatureError("r and s must lie in 1..n-1")
    if len(digest) != 32:
        raise SignatureError("a digest is 32 bytes")
    try:
        public = PublicKey.from_signature_and_message(signature[:64] + bytes([signature[64] - 27]), digest, hasher=None)
    except Exception as e:  # noqa: BLE001 - libsecp256k1 reports an unrecoverable signature as a plain error
        raise SignatureError(f"no public key recovers from this signature ({e})") from None
    return address_of_public(public.format(compressed=False))


def is_low_s(signature: bytes) -> bool:
    """Whether s ≤ n/2: each signature then has exactly one encoding (no malleable twin)."""
    return len(signature) == 65 and int.from_bytes(signature[32:64], "big") <= N // 2
