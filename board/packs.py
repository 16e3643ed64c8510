"""Packs read in one sequential pass: a fetched pack taken in (checked and indexed), and many objects read at once.

dulwich takes a fetched pack in three passes (copy it while inflating every object, index it by resolving every
delta chain, then inflate every object again to check it) and reads objects one random lookup at a time, each
re-inflating its delta chain. A board's clone is one pack of mostly small records deltified against each
other: one pass in file order, each object inflated once and each delta applied to a base kept from earlier in
the pass, does that work once. The pass still refuses what dulwich refuses: a pack that is truncated, fails its
checksum, has bytes past its last object, a delta that does not apply, a duplicate object, or a tree, commit or
tag that does not parse. What it cannot do cheaply (a thin pack, whose deltas name bases outside it, or a pack
too large to hold in memory) is left to dulwich's own path.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from dulwich.errors import ApplyDeltaError
from dulwich.objects import Blob, ShaFile, object_class, object_header
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta, iter_sha1, write_pack_index

from board.bulk import paused_gc

MEMORY = 512 << 20  # bytes of object contents one pass may hold (delta bases, records); beyond that, dulwich's path
KEEP = 16 << 10  # blobs up to this size are kept for the readers that follow (validation, the browse index)
TRAILER = 20  # the SHA-1 of everything before it
PACK_MODE = 0o444
SPARSE = 4  # a one-pass read of a pack pays off once the objects wanted are a quarter of it (Store.preload)


class BadPack(ValueError):
    """The bytes are not a well-formed pack; `reason` says where and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unsuited(Exception):
    """A pack this pass leaves to dulwich: a thin one (its deltas name bases outside it), or one too large."""


@dataclass
class Scan:
    """What one pass over a pack found."""

    entries: list[tuple[bytes, int, int]] = field(default_factory=list)  # (binary sha, offset, crc32)
    kept: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # hex sha → (type, bytes), as asked


def _header(buf: Any) -> int:
    if len(buf) < 12 + TRAILER or bytes(buf[:4]) != b"PACK":
        raise BadPack("it is not a pack (no PACK header)")
    if int.from_bytes(buf[4:8], "big") not in (2, 3):
        raise BadPack("its version is not 2 or 3")
    return int.from_bytes(buf[8:12], "big")


def _apply(base: tuple[int, bytes], delta: bytes, offset: int) -> tuple[int, bytes]:
    try:
        out = apply_delta(base[1], delta)
    except (ApplyDeltaError, ValueError, IndexError, TypeError, MemoryError) as e:
        raise BadPack(f"the delta at offset {offset} does not apply ({e})") from None
    return base[0], out if isinstance(out, bytes) else b"".join(out)


def _unpack(buf: Any, offset: int, end: int, limit: int) -> tuple[int, int | bytes | None, bytes, int]:
    """(type, delta base: its offset or sha, inflated bytes, offset after) of the object at `offset`.

    The entry format (git's pack-format.txt): a size varint whose first byte also holds the type, then for an
    OFS_DELTA a base-distance varint or for a REF_DELTA the base's 20-byte sha, then the zlib stream."""
    pos = offset
    try:
        c = buf[pos]
        pos += 1
        kind, size, shift = (c >> 4) & 7, c & 15, 4
        while c & 0x80 and shift <= 70:
            c = buf[pos]
            pos += 1
            size |= (c & 0x7F) << shift
            shift += 7
        base: int | bytes | None = None
        if kind == OFS_DELTA:
            c = buf[pos]
            pos += 1
            distance = c & 0x7F
            while c & 0x80 and distance < end:
                c = buf[pos]
                pos += 1
                distance = ((distance + 1) << 7) | (c & 0x7F)
            start = offset - distance
            base = start
            if distance <= 0 or start < 12:
                raise BadPack(f"the delta at offset {offset} names a base outside the pack")
        elif kind == REF_DELTA:
            base = bytes(buf[pos:pos + 20])
            pos += 20
    except IndexError:
        raise BadPack(f"the object at offset {offset} runs past the end (truncated?)") from None
    if shift > 70 or pos > end:
        raise BadPack(f"the object at offset {offset} has a malformed header")
    if size > limit:
        raise Unsuited(f"the object at offset {offset} is too large to inflate here")
    inflate = zlib.decompressobj()
    window = min(end, pos + size + 64 + (size >> 4))  # zlib's worst case for `size` bytes, and then some
    try:
        data = inflate.decompress(buf[pos:window], size + 1)
        while not inflate.eof and window < end and len(data) <= size:  # the stream is longer than it may be
            more = min(end, window + max(window - pos, 1 << 16))
            data += inflate.decompress(inflate.unconsumed_tail + buf[window:more], size + 1 - len(data))
            window = more
    except zlib.error as e:
        raise BadPack(f"the object at offset {offset} does not inflate ({e})") from None
    if not inflate.eof:
        raise BadPack(f"the object at offset {offset} does not inflate to the size its header says (truncated?)")
    if len(data) != size:
        raise BadPack(f"the object at offset {offset} is not the size its header says")
    return kind, base, data, window - len(inflate.unused_data)


def objects(buf: Any, memory: int = MEMORY) -> Iterator[tuple[int, int, bytes, bytes, int]]:
    """(offset, type, content, binary sha, crc32) of every object, in pack order (a REF_DELTA whose base comes
    later in the pack: once its base has been met). Each delta is applied to a base held from earlier in the pass.
    Unsuited when the contents held pass `memory` or a delta's base is not in the pack."""
    count = _header(buf)
    end = len(buf) - TRAILER
    held: dict[int, tuple[int, bytes]] = {}  # offset → (type, content): every object, as a base for later deltas
    at: dict[bytes, int] = {}  # binary sha → offset
    # deltas whose base is not resolved yet, by the base's sha (REF_DELTA) or offset (OFS_DELTA on such a delta)
    waiting: dict[bytes | int, list[tuple[int, bytes, int]]] = {}
    starts: set[int] = set()  # where every object met so far begins
    offset = 12
    for _ in range(count):
        if offset >= end:
            raise BadPack(f"it ends before its {count} objects (truncated?)")
        kind, delta_base, data, after = _unpack(buf, offset, end, memory)
        crc = zlib.crc32(buf[offset:after])
        starts.add(offset)
        ready: list[tuple[int, int, bytes, int]] = []
        if kind == OFS_DELTA:
            assert isinstance(delta_base, int)
            base = held.get(delta_base)
            if base is not None:
                ready.append((offset, *_apply(base, data, offset), crc))
            elif delta_base in starts:  # its base is a delta still waiting for its own base
                waiting.setdefault(delta_base, []).append((offset, data, crc))
            else:
                raise BadPack(f"the delta at offset {offset} names no object of the pack as its base")
        elif kind == REF_DELTA:
            base_sha = bytes(delta_base or b"")
            if base_sha in at:
                ready.append((offset, *_apply(held[at[base_sha]], data, offset), crc))
            else:
                waiting.setdefault(base_sha, []).append((offset, data, crc))
        elif kind in (Blob.type_num, 1, 2, 4):  # blob, commit, tree, tag
            ready.append((offset, kind, data, crc))
        else:
            raise BadPack(f"the object at offset {offset} has type {kind}")
        while ready:
            off, typ, content, ocrc = ready.pop()
            sha = hashlib.sha1(object_header(typ, len(content)) + content).digest()
            if sha in at:
                raise BadPack(f"it holds object {sha.hex()} twice")
            at[sha] = off
            held[off] = (typ, content)
            memory -= len(content)
            if memory < 0:
                raise Unsuited("the pack is too large to take in one pass")
            yield off, typ, content, sha, ocrc
            for doff, delta, dcrc in [*waiting.pop(sha, ()), *waiting.pop(off, ())]:
                ready.append((doff, *_apply((typ, content), delta, doff), dcrc))
        offset = after
    if offset != end:
        raise BadPack("it holds bytes past its last object")
    if waiting:
        raise Unsuited("a thin pack: some deltas name bases outside it")


def _checksum(buf: Any) -> bytes:
    view = memoryview(buf)
    try:
        digest = hashlib.sha1(view[: len(buf) - TRAILER]).digest()
    finally:
        view.release()
    if digest != bytes(buf[len(buf) - TRAILER :]):
        raise BadPack("its checksum does not match its bytes")
    return digest


def scan(buf: Any, keep: Callable[[int, int, bytes], bool], check: bool = True) -> Scan:
    """One pass: every object's index entry, the (type, bytes) of those `keep(type, size, hex sha)` wants, and
    (with `check`) every tree, commit and tag parsed, so one that does not parse refuses the pack."""
    out = Scan()
    for off, typ, content, sha, crc in objects(buf):
        out.entries.append((sha, off, crc))
        hexsha = sha.hex().encode()
        if check and typ != Blob.type_num:
            cls = object_class(typ)
            try:
                assert cls is not None
                ShaFile.from_raw_string(typ, content, sha=cast(Any, hexsha))
            except Exception as e:  # noqa: BLE001 - whatever dulwich's parser trips on, the object is bad
                raise BadPack(f"its {cls.type_name.decode() if cls else 'object'} {hexsha.decode()} does not "
                              f"parse ({type(e).__name__})") from None
        if keep(typ, len(content), hexsha):
            out.kept[hexsha] = (typ, content)
    return out


def small_records(typ: int, size: int, sha: bytes) -> bool:
    """What a fetch keeps for the readers that follow it: blobs small enough to be records."""
    return typ == Blob.type_num and size <= KEEP


def take_in(incoming: Path, pack_dir: Path) -> dict[bytes, tuple[int, bytes]]:
    """Check and index a fetched (not thin) pack in one pass and move it into `pack_dir`; returns its small
    blobs. BadPack for a malformed pack, Unsuited for one to leave to dulwich; `incoming` is then untouched."""
    with open(incoming, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < 12 + TRAILER:
            raise BadPack("it is shorter than a pack header (truncated?)")
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        with paused_gc():
            checksum = _checksum(buf)
            found = scan(buf, small_records)
    finally:
        buf.close()
    entries = sorted(found.entries)
    base = pack_dir / f"pack-{iter_sha1(sha for sha, _, _ in entries).decode()}"
    pack, idx = base.with_suffix(".pack"), base.with_suffix(".idx")
    if idx.exists():  # the same objects are packed already
        incoming.unlink()
        return found.kept
    os.chmod(incoming, PACK_MODE)
    os.replace(incoming, pack)
    part = base.with_suffix(f".idx.{os.getpid()}.part")
    with open(part, "wb") as fh:  # a pack is only visible with its index: write that last, whole
        write_pack_index(fh, entries, checksum, version=2)
    os.chmod(part, PACK_MODE)
    os.replace(part, idx)
    return found.kept


def read_pack(path: Path, wanted: set[bytes]) -> dict[bytes, tuple[int, bytes]]:
    """The (type, bytes) of the wanted objects (hex shas) one pack holds, read in one pass over its file."""
    with open(path, "rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        with paused_gc():
            return scan(buf, lambda typ, size, sha: sha in wanted, check=False).kept
    finally:
        buf.close()


class Held:
    """Objects held in memory, read like a pack (`Store.warm` puts one before the packs `Store.raw` reads)."""

    def __init__(self, objects: dict[bytes, tuple[int, bytes]]) -> None:
        self.objects = objects

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        return self.objects[sha]  # KeyError: not held, ask the next pack

    def __len__(self) -> int:
        return len(self.objects)
