"""The remote: fetch and compare-and-swap push over any URL dulwich speaks.

The shared remote is the referee. A push names the base it was built on; if the remote branch is no longer
there, the push is refused before any data is sent. A server's per-ref status is checked, and over HTTP the
result is confirmed by reading the ref back: dulwich's own server answers "ok" even when its compare-and-swap
of the ref failed, which would otherwise let two rigs both believe they won a claim.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dulwich.client import get_transport_and_path
from dulwich.errors import (
    ApplyDeltaError,
    ChecksumMismatch,
    GitProtocolError,
    HangupException,
    NotGitRepository,
    ObjectFormatException,
)
from dulwich.file import FileLocked
from dulwich.pack import UnresolvedDeltas, pack_objects_to_data

from board.errors import RemoteError, Unreachable
from board.store import MAIN, NewObjects, Store

ZERO = b"0" * 40


class Rejected(Exception):
    """The remote branch moved (or the server refused our update): fetch and try again."""

    def __init__(self, reason: str, current: bytes | None = None) -> None:
        super().__init__(reason)
        self.current = current


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    socket.timeout,
    HangupException,
    GitProtocolError,
    NotGitRepository,
    EOFError,
)


FETCH_ATTEMPTS = 4
MAX_LANES = 100_000  # lane refs read from one advertisement; beyond that a hostile remote only wastes our time  # a fetch that raced a push is tried again this many times in all


def _network_errors() -> tuple[type[BaseException], ...]:
    try:
        import urllib3.exceptions

        return _NETWORK_ERRORS + (urllib3.exceptions.HTTPError,)
    except ImportError:  # pragma: no cover
        return _NETWORK_ERRORS


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


@dataclass
class Remote:
    url: str

    def __post_init__(self) -> None:
        try:
            client, path = get_transport_and_path(self.url)
            self._client: Any = client  # dulwich's NewType ids stop at this boundary
            self._path: Any = path
        except (ValueError, KeyError) as e:
            raise RemoteError(self.url, f"unsupported URL ({_describe(e)})") from None
        self._confirm = self.url.startswith(("http://", "https://"))
        self.lanes: dict[str, bytes] = {}  # the claim lanes the last fetch saw: item id → tip

    def head(self) -> bytes | None:
        """The remote's main branch, without fetching objects."""
        try:
            refs: dict[bytes, bytes] = self._client.get_refs(self._path).refs
        except _network_errors() as e:
            raise Unreachable(self.url, _describe(e)) from None
        sha = refs.get(MAIN)
        return sha if sha and sha != ZERO else None

    def fetch(self, store: Store) -> bytes | None:
        """Bring the remote's main (and its claim lanes) into the store; returns main's head (None: empty).

        The lanes the remote advertised are left in `self.lanes` (item id → tip), their objects fetched."""
        from board.layout import lane_item

        seen: list[bytes | None] = []
        lanes: dict[str, bytes] = {}
        want_lanes = [True]

        def wants(refs: dict[bytes, bytes], depth: int | None = None) -> list[bytes]:
            sha = refs.get(MAIN)
            seen.append(sha)
            lanes.clear()
            out = [sha] if sha and sha != ZERO and not store.has(sha) else []
            for ref, tip in refs.items():
                item_id = lane_item(ref)
                if item_id is None or tip == ZERO or len(lanes) >= MAX_LANES:
                    continue
                lanes[item_id] = tip
                if want_lanes[0] and not store.has(tip) and tip not in out:
                    out.append(tip)
            return out

        for attempt in range(FETCH_ATTEMPTS):
            seen.clear()
            # Lanes come and go all the time: if wants keep being refused, the last try fetches main alone.
            want_lanes[0] = attempt < FETCH_ATTEMPTS - 1
            try:
                result = self._fetch_pack(store, wants)
                break
            except GitProtocolError as e:
                # Over smart HTTP the refs are advertised in one request and wanted in the next: a push landing
                # in between makes the server refuse the want ("not our ref" / "wants invalid object"). The
                # server answered, so fetch again rather than report it unreachable.
                if isinstance(e, HangupException) or attempt == FETCH_ATTEMPTS - 1:
                    raise Unreachable(self.url, _describe(e)) from None
                time.sleep(0.05 * (attempt + 1))
            except _network_errors() as e:
                raise Unreachable(self.url, _describe(e)) from None
        # The head the objects were fetched for, not the refs dulwich re-reads afterwards: over a local path
        # those can already name a commit another writer pushed since, whose objects we do not have.
        sha = seen[0] if seen else result.refs.get(MAIN)
        self.lanes = dict(lanes)
        return sha if sha and sha != ZERO else None

    def _fetch_pack(self, store: Store, wants: Any) -> Any:
        """One fetch: the pack is written to a file as it arrives and taken in with one pass (board/packs.py)
        where dulwich would pass over it three times; a thin or very large pack goes dulwich's own way."""
        from board import packs

        objects = store.path / "objects"
        fd, name = tempfile.mkstemp(dir=objects, prefix="tmp_fetch_")
        incoming = Path(name)
        try:
            with os.fdopen(fd, "wb") as sink:
                result = self._client.fetch_pack(self._path, wants, store.repo.get_graph_walker(), sink.write)
            if result.object_format not in (None, "sha1"):
                raise RemoteError(self.url, f"it stores objects as {str(result.object_format)[:20]}, not sha1")
            if incoming.stat().st_size:
                try:
                    store.warm(packs.take_in(incoming, objects / "pack"))
                except packs.Unsuited:
                    with open(incoming, "rb") as fh:
                        store.objects.add_thin_pack(fh.read, None)
                except packs.BadPack as e:
                    raise RemoteError(self.url, f"it sent a pack that is not valid: {e.reason}") from None
        except (ApplyDeltaError, ChecksumMismatch, ObjectFormatException, UnresolvedDeltas, zlib.error) as e:
            raise RemoteError(self.url, f"it sent a pack that is not valid ({_describe(e)})") from None
        finally:
            incoming.unlink(missing_ok=True)
        return result

    def push_lanes(
        self, store: Store, updates: dict[bytes, tuple[bytes | None, bytes | None]], objects: NewObjects
    ) -> dict[bytes, bool]:
        """Move each lane ref from its old value (None: create it only if absent) to its new one (None: delete
        it), in one push; returns which updates landed. The server checks every old value under its lock, so
        of two rigs creating the same lane exactly one gets it, and lanes of other items never collide."""

        def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
            out = {}
            for ref, (old, new) in updates.items():
                current = refs.get(ref)
                if (current if current and current != ZERO else None) == old:
                    out[ref] = new or ZERO
            return out

        def pack_data(have: object, want: object, ofs_delta: bool = True, progress: object = None) -> object:
            return pack_objects_to_data([(o, None) for o in objects.objects])

        try:
            result = self._client.send_pack(self._path, update_refs, generate_pack_data=pack_data)
        except FileLocked:
            return dict.fromkeys(updates, False)
        except _network_errors() as e:
            # The push may have landed in part (dulwich's HTTP server answers 500 when another writer holds a
            # ref's lock): the refs as the remote holds them now say which updates did.
            # As for main: refs still at their old values may only mean the winner has not finished writing.
            for pause in (0.0, 0.05, 0.2, 0.5):
                time.sleep(pause)
                try:
                    landed, unchanged = self._read_back(updates, dict.fromkeys(updates, True))
                except Unreachable:
                    break
                if not all(unchanged.values()):
                    return landed
            raise Unreachable(self.url, _describe(e)) from None  # nothing landed, nobody else's did: it failed
        sent = result.refs or {}
        status = result.ref_status or {}
        landed = {ref: ref in sent and status.get(ref) in (None, "ok", b"ok") for ref in updates}
        if self._confirm and any(landed.values()):  # dulwich's HTTP server says ok even when its CAS failed
            landed, _ = self._read_back(updates, landed)
        return landed

    def _read_back(
        self, updates: dict[bytes, tuple[bytes | None, bytes | None]], landed: dict[bytes, bool]
    ) -> tuple[dict[bytes, bool], dict[bytes, bool]]:
        """(which updates the remote now holds, which refs still hold the old value) as read back."""
        try:
            refs = self._client.get_refs(self._path).refs
        except _network_errors() as e:
            raise Unreachable(self.url, _describe(e)) from None
        out, unchanged = {}, {}
        for ref, (old, new) in updates.items():
            now = refs.get(ref)
            now = now if now and now != ZERO else None
            out[ref] = landed[ref] and now == new
            unchanged[ref] = now == old and now != new
        return out, unchanged

    def push(self, store: Store, new: bytes, expected: bytes | None, objects: NewObjects | None) -> None:
        """Move the remote main from `expected` to `new`, or raise Rejected / Unreachable."""

        def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
            current = refs.get(MAIN)
            if current == ZERO:
                current = None
            if current != expected:
                raise Rejected("remote main moved", current)
            return {MAIN: new}

        def pack_data(have: object, want: object, ofs_delta: bool = True, progress: object = None) -> object:
            if objects is not None:
                return pack_objects_to_data([(o, None) for o in objects.objects])
            return store.objects.generate_pack_data(have, want, ofs_delta=ofs_delta)

        try:
            result = self._client.send_pack(self._path, update_refs, generate_pack_data=pack_data)
        except Rejected:
            raise
        except FileLocked:
            # A local or file:// remote whose ref another writer holds locked right now: we lost this round.
            raise Rejected("remote main is locked by a concurrent writer") from None
        except _network_errors() as e:
            # The push may or may not have landed (dulwich's HTTP server answers 500 when a concurrent
            # writer holds the ref's lock). If the remote answers now, its head says which.
            # A head still at our base may only mean the winner has not finished writing: look again briefly.
            for pause in (0.0, 0.05, 0.2, 0.5):
                time.sleep(pause)
                try:
                    self._settle(store, new, expected)
                    return
                except Unreachable:
                    break
                except _Unchanged:
                    continue
            raise Unreachable(self.url, _describe(e)) from None
        status = (result.ref_status or {}).get(MAIN)
        if status not in (None, "ok", b"ok"):
            text = status.decode() if isinstance(status, bytes) else str(status)
            raise Rejected(f"server refused the update: {text}")
        if self._confirm:
            try:
                self._settle(store, new, expected)
            except _Unchanged:
                raise Rejected("server reported ok but kept the old head", expected) from None

    def _settle(self, store: Store, new: bytes, expected: bytes | None) -> None:
        """Return if the remote holds `new` (or builds on it); Rejected if another writer won; else _Unchanged."""
        current = self.head()
        if current == new:
            return
        if current == expected:
            raise _Unchanged()
        if current is None:
            raise Rejected("server lost the update", None)
        self.fetch(store)
        if not store.is_ancestor(new, current):
            raise Rejected("another writer's commit landed instead of ours", current)


class _Unchanged(Exception):
    """The remote still holds the base we pushed on: our update did not land, and nobody else's did."""
