"""A rig's signing key: one secp256k1 private key per home, stored as hex with mode 0600.

The board records only the key's Ethereum address (``rigs/<handle>.json``); the key itself never leaves the
home. Crypto libraries are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

KEY_FILE = "key"
NEXT_KEY_FILE = "key.next"

# Order of the secp256k1 group: a private key is an integer in [1, N - 1].
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too widely readable."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"key file {path}: {reason}")


def key_path(home: Path) -> Path:
    """Where the rig's key lives in ``home``."""
    return Path(home) / KEY_FILE


def next_key_path(home: Path) -> Path:
    """Where a pending rotation keeps the new key until it is committed."""
    return Path(home) / NEXT_KEY_FILE


def ensure_key(home: Path) -> str:
    """Create the rig's key if there is none and return its checksummed address.

    Creation is create-if-absent (a hard link of a fully written temp file), so two concurrent callers
    end up with the same key instead of each returning a different address.
    """
    path = key_path(home)
    if not path.exists():
        _write_new_key(path)
    return address_of(home)


def load_private_key(home: Path) -> bytes:
    """Return the 32-byte private key, refusing a file that group or others can read."""
    return _read_key(key_path(home))


def load_next_key(home: Path) -> bytes | None:
    """A pending rotation's key (``key.next``), or None when no rotation is pending."""
    path = next_key_path(home)
    return _read_key(path) if path.exists() else None


def address_of(home: Path) -> str:
    """Checksummed Ethereum address of the rig's key."""
    return _address(load_private_key(home))


def new_key_for_rotation(home: Path) -> tuple[str, str]:
    """Create ``key.next`` (or reuse a pending one) and return ``(old_address, new_address)``.

    A pending key is reused rather than replaced: the board may already name its address.
    """
    old = load_private_key(home)
    nxt = next_key_path(home)
    if not nxt.exists():
        _write_new_key(nxt)
    return _address(old), _address(_read_key(nxt))


def commit_rotation(home: Path) -> str:
    """Make ``key.next`` the rig's key (atomic rename) and return the new address."""
    nxt = next_key_path(home)
    new = _read_key(nxt)  # never install a key we could not use
    os.replace(nxt, key_path(home))
    _fsync_dir(Path(home))
    return _address(new)


def _address(private_key: bytes) -> str:
    from board.secp256k1 import address_of

    return address_of(private_key)


def _generate() -> bytes:
    """32 bytes from os.urandom, redrawn in the (astronomically rare) case they are not a valid key."""
    while True:
        candidate = os.urandom(32)
        if 0 < int.from_bytes(candidate, "big") < _SECP256K1_N:
            return candidate


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(path, "does not exist (run `wl init` or `wl join` to create a key)") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be opened: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if os.name != "nt" and mode & 0o077:
            raise KeyFileError(
                path,
                f"is readable by group or others (mode {mode & 0o777:04o}); run: chmod 600 {path}",
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(256)
    finally:
        os.close(fd)
    return _parse_key(path, raw)


def _parse_key(path: Path, raw: bytes) -> bytes:
    text = raw.decode("ascii", errors="replace").strip()
    if text.startswith(("0x", "0X")):
        text = text[2:]
    if len(text) != 64:
        raise KeyFileError(path, "is corrupt: expected 64 hex digits of a secp256k1 private key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(path, "is corrupt: not hexadecimal") from None
    if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
        raise KeyFileError(path, "is corrupt: value is outside the secp256k1 key range")
    return key


def _write_new_key(path: Path) -> None:
    """Write a fresh key to ``path`` unless one appears there first; the file is 0600 from birth."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, ("0x" + _generate().hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        try:
            os.link(tmp, path)  # atomic create-if-absent of a complete file
        except FileExistsError:
            return  # someone else created it first; theirs is the key
        except OSError:
            # No hard links here (some network/FUSE file systems): an exclusive rename fallback.
            if path.exists():
                return
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- key rotation proofs (checked by the board's rotate-key rule) -------------------------------------
def rotation_message(board_id: str, handle: str, old: str, new: str) -> str:
    """What the old key signs: the board, the rig and both addresses (lowercase, so case never matters)."""
    return f"wl-rotate:{board_id}:{handle}:{old.lower()}:{new.lower()}"


def sign_rotation(private_key: bytes, message: str) -> str:
    from board.secp256k1 import eip191_hash, sign_hash

    return "0x" + sign_hash(eip191_hash(message.encode("utf-8")), private_key).hex()


def rotation_signer(message: str, proof: Any) -> str | None:
    """The address that signed ``message``, or None for a missing or garbled proof."""
    if not isinstance(proof, str) or not proof.startswith("0x"):
        return None
    try:
        from board.secp256k1 import eip191_hash, recover

        return recover(eip191_hash(message.encode("utf-8")), bytes.fromhex(proof[2:]))
    except Exception:  # noqa: BLE001 - any failure means "not proven"
        return None
