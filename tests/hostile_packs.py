"""A hostile git server for fetch tests: it speaks git's own protocol (v0, `git://`) on 127.0.0.1 and answers a
clone with whatever pack bytes it is given: truncated, with a bad object, a bad checksum, trailing bytes.

git daemon would not serve such a pack (git refuses it before sending), so this is the server an attacker
runs: it advertises one branch, reads the client's wants up to `done`, answers NAK and sends the bytes. Every
connection is bounded (a 10 s socket timeout) and the server is stopped by the fixture that started it.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import threading
import zlib
from typing import Self

from dulwich.object_format import SHA1
from dulwich.objects import ShaFile, object_header
from dulwich.pack import create_delta, write_pack_data

from board.store import MAIN, Store


def pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def read_pkt(sock: socket.socket) -> bytes | None:
    size = _exactly(sock, 4)
    n = int(size, 16)
    return None if n == 0 else _exactly(sock, n - 4)


def _exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("client went away")
        out += chunk
    return out


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        try:
            read_pkt(sock)  # git-upload-pack /path\0host=…\0
            head = self.server.head
            sock.sendall(pkt(head + b" HEAD\0ofs-delta symref=HEAD:refs/heads/main agent=hostile\n")
                         + pkt(head + b" " + MAIN + b"\n") + b"0000")
            while True:  # wants, a flush, then haves (none for a clone) and done
                line = read_pkt(sock)
                if line is not None and line.startswith(b"done"):
                    break
            sock.sendall(pkt(b"NAK\n") + self.server.pack)
            self.server.served += 1
        except (OSError, ConnectionError, ValueError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    head: bytes
    pack: bytes
    served: int


class HostileGitServer:
    """Serves `pack` as the pack of branch main at `head` (hex) to every clone: `git://127.0.0.1:PORT/x`."""

    def __init__(self, head: bytes, pack: bytes) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.head, self._server.pack, self._server.served = head, pack, 0
        self.url = f"git://127.0.0.1:{self._server.server_address[1]}/x"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def served(self) -> int:
        return self._server.served

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def honest_pack(store: Store, head: bytes) -> bytes:
    """Every object reachable from `head`, packed by dulwich as its server would send them to a clone."""
    import io

    count, records = store.objects.generate_pack_data([], [head], ofs_delta=True)
    out = io.BytesIO()
    write_pack_data(out.write, records, SHA1, num_records=count)
    return out.getvalue()


def raw_pack(objects: list[tuple[int, bytes]]) -> bytes:
    """A pack of whole (undeltified) objects given as (type, raw bytes), which need not parse."""
    return entries_pack([(kind, None, data) for kind, data in objects])


def entries_pack(entries: list[tuple[int, bytes | int | None, bytes]]) -> bytes:
    """A pack of raw entries (type, base, data): base None for a whole object, a 20-byte sha for a REF_DELTA
    (type 7), the index of an earlier entry for an OFS_DELTA (type 6); data is the object or the delta."""
    body = b"PACK" + (2).to_bytes(4, "big") + len(entries).to_bytes(4, "big")
    starts: list[int] = []
    for kind, base, data in entries:
        starts.append(len(body))
        size = len(data)
        first = (kind << 4) | (size & 15)
        size >>= 4
        header = b""
        while size:
            header += bytes([first | 0x80])
            first = size & 0x7F
            size >>= 7
        header += bytes([first])
        if isinstance(base, bytes):
            header += base
        elif isinstance(base, int):
            distance = starts[-1] - starts[base]
            enc = [distance & 0x7F]
            distance >>= 7
            while distance:
                distance -= 1
                enc.append(0x80 | (distance & 0x7F))
                distance >>= 7
            header += bytes(reversed(enc))
        body += header + zlib.compress(data)
    return body + hashlib.sha1(body).digest()


def delta(base: bytes, target: bytes) -> bytes:
    return b"".join(create_delta(base, target))


def object_id(obj: ShaFile | tuple[int, bytes]) -> bytes:
    if isinstance(obj, ShaFile):
        return bytes(obj.id)
    kind, data = obj
    return hashlib.sha1(object_header(kind, len(data)) + data).hexdigest().encode()
