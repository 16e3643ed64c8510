"""The few GGUF header facts a worker needs before loading a model: trained context and KV-cache shape.

Reads only the key/value header (no tensors, no engine), so a job whose context cannot fit is refused in
milliseconds. Every length in the header is checked against the file's size: a broken file is an error, never
a huge allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from wl_infer.backends.base import BackendError

_MAGIC = b"GGUF"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
MAX_KEYS = 1 << 16
MAX_STRING = 1 << 24  # a metadata string longer than 16 MiB is a broken (or hostile) file


@dataclass(frozen=True)
class GGUFFacts:
    architecture: str
    context_length: int | None  # the trained context (`<arch>.context_length`)
    block_count: int | None
    head_count_kv: int | None  # the largest per-layer value when the file gives a list
    key_length: int | None
    value_length: int | None
    file_size: int

    def kv_bytes_per_token(self) -> int | None:
        """Bytes of f16 K and V cache one token costs across all layers (an upper bound: sliding-window layers
        may hold fewer); None when the header does not say."""
        if None in (self.block_count, self.head_count_kv, self.key_length, self.value_length):
            return None
        assert self.block_count and self.head_count_kv and self.key_length and self.value_length
        return self.block_count * self.head_count_kv * (self.key_length + self.value_length) * 2


class _Reader:
    def __init__(self, fh: IO[bytes], size: int, path: Path) -> None:
        self.fh, self.size, self.path = fh, size, path

    def bad(self, why: str) -> BackendError:
        return BackendError("llama-cpp", f"{self.path} is not a readable GGUF file ({why})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.fh.tell() + n > self.size:
            raise self.bad("truncated header")
        return self.fh.read(n)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("Q")
        if n > MAX_STRING:
            raise self.bad("a metadata string is too long")
        return self.take(n).decode("utf-8", "replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS and not keep:  # skip fixed-size arrays without reading them
                width = struct.calcsize(_SCALARS[item])
                if count * width > self.size:
                    raise self.bad("an array is longer than the file")
                self.fh.seek(count * width, 1)
                return None
            if count > self.size:
                raise self.bad("an array is longer than the file")
            values = [self.value(item, keep) for _ in range(count)]
            return values if keep else None
        raise self.bad(f"unknown value type {kind}")


def read_facts(path: str | Path) -> GGUFFacts:
    """Architecture, trained context and KV shape from a GGUF file's header."""
    file = Path(path)
    wanted_suffixes = (".context_length", ".block_count", ".attention.head_count_kv",
                       ".attention.key_length", ".attention.value_length", ".attention.head_count",
                       ".embedding_length")  # fmt: skip
    meta: dict[str, Any] = {}
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            r = _Reader(fh, size, file)
            if r.take(4) != _MAGIC:
                raise r.bad("no GGUF magic")
            version = r.unpack("I")
            if version not in (2, 3):
                raise r.bad(f"GGUF version {version} is not supported")
            r.unpack("Q")  # tensor count
            n_kv = r.unpack("Q")
            if n_kv > MAX_KEYS:
                raise r.bad("too many metadata keys")
            for _ in range(n_kv):
                key = r.string()
                kind = r.unpack("I")
                keep = key == "general.architecture" or key.endswith(wanted_suffixes)
                value = r.value(kind, keep)
                if keep:
                    meta[key] = value
                arch = meta.get("general.architecture")
                done = len(meta) > len(wanted_suffixes)  # the architecture and each wanted fact
                # writers put the model's facts before the (large) tokenizer arrays: stop there
                if done or (key.startswith("tokenizer.") and f"{arch}.context_length" in meta):
                    break
    except OSError as e:
        raise BackendError("llama-cpp", f"cannot read {file}: {e.strerror or e}") from None
    arch = str(meta.get("general.architecture") or "")

    def number(name: str) -> int | None:
        v = meta.get(f"{arch}.{name}")
        if isinstance(v, list):
            v = max((x for x in v if isinstance(x, int)), default=None)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    heads, embd = number("attention.head_count"), number("embedding_length")
    head_dim = embd // heads if heads and embd else None
    return GGUFFacts(
        architecture=arch,
        context_length=number("context_length"),
        block_count=number("block_count"),
        head_count_kv=number("attention.head_count_kv") or heads,
        key_length=number("attention.key_length") or head_dim,
        value_length=number("attention.value_length") or head_dim,
        file_size=size,
    )
