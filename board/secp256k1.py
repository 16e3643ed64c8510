"""secp256k1 ECDSA with Ethereum's EIP-191 personal-sign, small and quick to import.

eth_account costs ~0.65 s to import (eth_utils pulls in pydantic; eth_account pulls in BLS code), which
dominated `wl infer run` on a small model. This module signs and recovers exactly as eth_account does
(RFC 6979 deterministic nonces, low-s, v ∈ {27, 28}); tests compare it with eth_account byte for byte.
Not constant-time — neither is eth_keys' native backend that eth_account uses by default.
"""

from __future__ import annotations

import hashlib
import hmac

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
Jacobian = tuple[int, int, int]
_INF: Jacobian = (0, 1, 0)


class SignatureError(ValueError):
    """A signature or key that is not valid on secp256k1."""


def keccak256(data: bytes) -> bytes:
    from Crypto.Hash import keccak  # pycryptodome: imports in milliseconds

    return keccak.new(digest_bits=256, data=data).digest()


def _double(p: Jacobian) -> Jacobian:
    x, y, z = p
    if z == 0 or y == 0:
        return _INF
    ysq = y * y % P
    s = 4 * x * ysq % P
    m = 3 * x * x % P
    nx = (m * m - 2 * s) % P
    ny = (m * (s - nx) - 8 * ysq * ysq) % P
    return nx, ny, 2 * y * z % P


def _add(p: Jacobian, q: Jacobian) -> Jacobian:
    if p[2] == 0:
        return q
    if q[2] == 0:
        return p
    z1sq, z2sq = p[2] * p[2] % P, q[2] * q[2] % P
    u1, u2 = p[0] * z2sq % P, q[0] * z1sq % P
    s1, s2 = p[1] * z2sq * q[2] % P, q[1] * z1sq * p[2] % P
    if u1 == u2:
        return _double(p) if s1 == s2 else _INF
    h, r = (u2 - u1) % P, (s2 - s1) % P
    hsq = h * h % P
    hcu = hsq * h % P
    nx = (r * r - hcu - 2 * u1 * hsq) % P
    ny = (r * (u1 * hsq - nx) - s1 * hcu) % P
    return nx, ny, h * p[2] * q[2] % P


def _mul(point: tuple[int, int], k: int) -> Jacobian:
    result, addend = _INF, (point[0], point[1], 1)
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _double(addend)
        k >>= 1
    return result


def _affine(p: Jacobian) -> tuple[int, int]:
    if p[2] == 0:
        raise SignatureError("point at infinity")
    zinv = pow(p[2], -1, P)
    return p[0] * zinv * zinv % P, p[1] * zinv * zinv * zinv % P


def address_of_point(point: tuple[int, int]) -> str:
    """EIP-55 checksummed address of a public key."""
    raw = keccak256(point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big"))[-20:].hex()
    mask = keccak256(raw.encode()).hex()
    return "0x" + "".join(c.upper() if int(m, 16) >= 8 else c for c, m in zip(raw, mask[:40], strict=True))


def _secret(private_key: bytes) -> int:
    d = int.from_bytes(private_key, "big")
    if len(private_key) != 32 or not 0 < d < N:
        raise SignatureError("a private key is 32 bytes, 0 < key < n")
    return d


def address_of(private_key: bytes) -> str:
    return address_of_point(_affine(_mul(G, _secret(private_key))))


def eip191_hash(message: bytes) -> bytes:
    """Personal-sign (version 0x45) hash: what `encode_defunct` + `sign_message` sign."""
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def _nonce(d: int, digest: bytes) -> int:
    """RFC 6979 deterministic k (HMAC-SHA256), as eth_keys derives it."""
    x = d.to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + digest, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + digest, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = int.from_bytes(v, "big")
        if 0 < candidate < N:
            return candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()  # pragma: no cover - probability ~2^-128
        v = hmac.new(k, v, hashlib.sha256).digest()  # pragma: no cover


def sign_hash(digest: bytes, private_key: bytes) -> bytes:
    """65 bytes r ‖ s ‖ v with low s and v ∈ {27, 28}."""
    d = _secret(private_key)
    z = int.from_bytes(digest, "big")
    k = _nonce(d, digest)
    rx, ry = _affine(_mul(G, k))
    r = rx % N
    s = pow(k, -1, N) * (z + r * d) % N
    if r == 0 or s == 0:  # pragma: no cover - probability ~2^-256
        raise SignatureError("degenerate signature")
    recid = ry & 1
    if s > N // 2:
        s, recid = N - s, recid ^ 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recid])


def recover(digest: bytes, signature: bytes) -> str:
    """The address whose key made `signature` over `digest` (SignatureError when impossible)."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise SignatureError("a signature is 65 bytes ending in v = 27 or 28")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < N and 0 < s < N):
        raise SignatureError("r and s must lie in 1..n-1")
    alpha = (r * r * r + 7) % P
    beta = pow(alpha, (P + 1) // 4, P)
    if beta * beta % P != alpha:
        raise SignatureError("r is not the x of a curve point")
    y = beta if beta & 1 == signature[64] - 27 else P - beta
    rinv = pow(r, -1, N)
    z = int.from_bytes(digest, "big")
    q = _add(_mul(G, (-z * rinv) % N), _mul((r, y), s * rinv % N))
    return address_of_point(_affine(q))
