"""Rig key files: created 0600, loaded only when private, rotated through key.next."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from board.keys import (
    KeyFileError,
    address_of,
    commit_rotation,
    ensure_key,
    key_path,
    load_private_key,
    new_key_for_rotation,
    next_key_path,
)

ROOT = Path(__file__).resolve().parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_key_creates_private_hex_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    address = ensure_key(home)
    path = key_path(home)
    assert path == home / "key"
    assert _mode(path) == 0o600
    text = path.read_text()
    assert text.startswith("0x") and len(text.strip()) == 66
    assert address.startswith("0x") and len(address) == 42
    assert address != address.lower()  # checksummed


def test_ensure_key_is_idempotent(tmp_path: Path) -> None:
    first = ensure_key(tmp_path)
    before = key_path(tmp_path).read_bytes()
    assert ensure_key(tmp_path) == first
    assert key_path(tmp_path).read_bytes() == before
    assert address_of(tmp_path) == first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_key_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_key(tmp_path)
    finally:
        os.umask(old)
    assert _mode(key_path(tmp_path)) == 0o600


def test_address_matches_eth_account(tmp_path: Path) -> None:
    from eth_account import Account

    address = ensure_key(tmp_path)
    assert Account.from_key(load_private_key(tmp_path)).address == address


def test_refuses_group_or_world_readable_key(tmp_path: Path) -> None:
    ensure_key(tmp_path)
    key_path(tmp_path).chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path)
    message = str(info.value)
    assert str(key_path(tmp_path)) in message
    assert "chmod 600" in message and "0644" in message
    with pytest.raises(KeyFileError):
        ensure_key(tmp_path)  # an existing key is validated, never silently replaced


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        load_private_key(tmp_path)
    assert info.value.path == tmp_path / "key"


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key\n", b"0x" + b"zz" * 32, b"0x" + b"00" * 32, b"0x" + b"ff" * 32, b"0x" + b"11" * 31],
    ids=["empty", "text", "non-hex", "zero", "above-curve-order", "short"],
)
def test_corrupt_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = key_path(tmp_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError, match="corrupt") as info:
        load_private_key(tmp_path)
    assert info.value.path == path


def test_concurrent_ensure_key_agrees_on_one_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    barrier = threading.Barrier(4)
    results: list[str] = []

    def work() -> None:
        barrier.wait(timeout=10)
        results.append(ensure_key(home))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 4 and len(set(results)) == 1
    assert results[0] == address_of(home)


def test_rotation_writes_key_next_then_commits(tmp_path: Path) -> None:
    old = ensure_key(tmp_path)
    previous, new = new_key_for_rotation(tmp_path)
    assert previous == old and new != old
    assert _mode(next_key_path(tmp_path)) == 0o600
    assert address_of(tmp_path) == old  # nothing changes until the rotation is committed
    assert new_key_for_rotation(tmp_path) == (old, new)  # a pending key is reused, not replaced
    assert commit_rotation(tmp_path) == new
    assert address_of(tmp_path) == new
    assert not next_key_path(tmp_path).exists()
    assert _mode(key_path(tmp_path)) == 0o600


def test_commit_without_pending_rotation_fails(tmp_path: Path) -> None:
    ensure_key(tmp_path)
    with pytest.raises(KeyFileError, match="key.next"):
        commit_rotation(tmp_path)


def test_rotation_needs_an_existing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        new_key_for_rotation(tmp_path)
    assert not next_key_path(tmp_path).exists()


def test_importing_board_keys_stays_cheap() -> None:
    code = "import sys, board.keys; print(sorted(m for m in sys.modules if m.startswith(('eth', 'web3'))))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
