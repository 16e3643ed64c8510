"""Checks on whole trees and tree differences, for the ledger: what a commit changed, and whether a tree
taken as-is (a root, a wl-board/1 checkpoint) holds only well-formed records.

Entries a tree may hold: regular files (mode 100644) at the record paths of board/layout.py and folders
(040000) on the way to them. Gitlinks, symlinks, executables, a folder where a file belongs, non-UTF-8 or
unparseable JSON, bad times or enum values are refused.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from board import layout, parsecache
from board.bulk import paused_gc
from board.ids import BOARD_ID_RE, HANDLE_RE, ITEM_RE, TIME_RE
from board.records import Completion, Item, RecordError, Rig, item_dict, loads
from board.store import FILE_MODE, TREE_MODE, Store
from board.view import MAX_RECORD_BYTES

BUCKET_RE = re.compile(r"^[0-9a-f]{2}\Z")
MAX_PATHS = 20


class TreeProblem(ValueError):
    """A tree entry that no valid board holds."""


def strict_time(value: str) -> datetime:
    """An RFC 3339 UTC time whose fields are all in range (`2026-99-99T99:99:99Z` is refused)."""
    if not isinstance(value, str) or not TIME_RE.match(value):
        raise ValueError(f"not an RFC 3339 UTC time: {value[:40]!r}")
    return datetime.fromisoformat(value)  # the pattern leaves only field ranges to check: this does


def changed_paths(store: Store, old: bytes | None, new: bytes | None, prefix: str = "") -> list[str]:
    """Paths whose entries differ between two trees (descending only into folders that differ)."""
    out: list[str] = []
    a = {e.path: (e.mode, e.sha) for e in store.tree(old).iteritems()} if old else {}
    b = {e.path: (e.mode, e.sha) for e in store.tree(new).iteritems()} if new else {}
    for name in sorted(set(a) | set(b)):
        if len(out) >= MAX_PATHS:
            break
        ea, eb = a.get(name), b.get(name)
        if ea == eb:
            continue
        path = prefix + name.decode("utf-8", "replace")
        sub_a = ea[1] if ea and ea[0] == TREE_MODE else None
        sub_b = eb[1] if eb and eb[0] == TREE_MODE else None
        if (sub_a or sub_b) and not ((ea and not sub_a) or (eb and not sub_b)):
            try:
                out.extend(changed_paths(store, sub_a, sub_b, path + "/"))
            except KeyError:  # a "folder" that is no tree (or is missing): the folder itself changed
                out.append(path)
        else:
            out.append(path)
    return out[:MAX_PATHS]


def attachment_blobs(store: Store, tree: bytes, paths: list[str]) -> dict[str, bytes]:
    """The content-addressed blobs an operation carries: each a regular file hashing to its own name."""
    out: dict[str, bytes] = {}
    for path in paths:
        entry = store.lookup(tree, path)
        if entry is None or entry[0] != FILE_MODE:
            raise TreeProblem(f"attachment {path} is missing or not a regular file")
        data = store.blob_text(entry[1])
        if hashlib.sha256(data).hexdigest() != path.rsplit("/", 1)[-1]:
            raise TreeProblem(f"attachment {path} does not hash to its name")
        out[path] = data
    return out


def _entries(store: Store, tree: bytes, path: str) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    for e in store.tree(tree).iteritems():
        try:
            name = e.path.decode("utf-8")
        except UnicodeDecodeError:
            raise TreeProblem(f"{path}/? has a name that is not UTF-8") from None
        out.append((name, e.mode, e.sha))
    return out


def _file(store: Store, path: str, mode: int, sha: bytes) -> bytes:
    if mode != FILE_MODE:
        kind = {0o160000: "a gitlink", 0o120000: "a symlink", TREE_MODE: "a folder"}.get(mode, f"mode {mode:o}")
        raise TreeProblem(f"{path} is {kind} where a file belongs")
    data = store.blob_text(sha)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise TreeProblem(f"{path} is not UTF-8") from None
    return data


def _dir(mode: int, path: str) -> None:
    if mode != TREE_MODE:
        raise TreeProblem(f"{path} is a file where a folder belongs")


def _record(path: str, data: bytes, kind: str, name: str) -> Item | None:
    """Refuse a record that does not decode or does not match its file name; an item is returned."""
    try:
        # decode checks every time field as strict_time does (board/records.py: _time)
        if kind == "item":
            item = Item.decode(data)
            if item.id != name:
                raise RecordError("its id differs from its file name")
            return item
        elif kind == "completion":
            if Completion.decode(data).wanted_id != name:
                raise RecordError("its wanted_id differs from its file name")
        elif kind == "rig":
            if Rig.decode(data).handle != name:
                raise RecordError("its handle differs from its file name")
        else:
            loads(data)
    except (RecordError, ValueError) as e:
        raise TreeProblem(f"{path}: {e}") from None
    return None


def _records(store: Store, tree: bytes, path: str, kind: str, fanned: bool = True) -> None:
    """Files `<id>.json` (or folders, for attestations), flat or in two-hex buckets. A bucket of items that a
    browse index would read exactly as they are (all in their bucket, none too large) is remembered as the rows
    the index build after a join takes instead of decoding every record again (board/parsecache.py)."""
    bucket = path.rsplit("/", 1)[-1]
    rows: list[dict[str, object]] | None = [] if kind == "item" and not fanned and BUCKET_RE.match(bucket) else None
    for name, mode, sha in _entries(store, tree, path):
        sub = f"{path}/{name}"
        if fanned and BUCKET_RE.match(name) and mode == TREE_MODE:
            _records(store, sha, sub, kind, fanned=False)
            continue
        stem = name.removesuffix(".json") if kind != "attestation" else name
        if not ITEM_RE.match(stem) or (kind != "attestation" and not name.endswith(".json")):
            raise TreeProblem(f"{sub} is not a record path")
        if kind == "attestation":
            _dir(mode, sub)
            for vname, vmode, vsha in _entries(store, sha, sub):
                if not vname.endswith(".json") or not HANDLE_RE.match(vname[:-5]):
                    raise TreeProblem(f"{sub}/{vname} is not an attestation path")
                _record(f"{sub}/{vname}", _file(store, f"{sub}/{vname}", vmode, vsha), "json", vname)
        else:
            data = _file(store, sub, mode, sha)
            item = _record(sub, data, kind, stem)
            if rows is not None and item is not None:
                if len(data) <= MAX_RECORD_BYTES["item"] and layout.bucket(item.id) == bucket:
                    rows.append({"item": item_dict(item)})
                else:
                    rows = None  # the reader skips it with a warning: let the index build read the bucket itself
    if rows is not None:
        parsecache.remember(path, tree, rows)


def check_tree(store: Store, tree: bytes) -> dict[str, object]:
    """Refuse any entry no valid board holds; returns board.json's content."""
    with paused_gc():
        store.preload(_record_blobs(store, tree))
        return _check_tree(store, tree)


def _record_blobs(store: Store, tree: bytes) -> list[bytes]:
    """The blobs in the record folders' buckets (what a check reads every one of), to read in one pass."""
    out: list[bytes] = []
    try:
        tops = [sha for name, mode, sha in _entries(store, tree, "") if mode == TREE_MODE
                and name in ("wanted", "completions", "attestations")]
        archive = store.lookup(tree, layout.ARCHIVE)
        if archive is not None and archive[0] == TREE_MODE:
            tops += [sha for _, mode, sha in _entries(store, archive[1], layout.ARCHIVE) if mode == TREE_MODE]
        for top in tops:
            for _, mode, sha in _entries(store, top, ""):
                if mode == TREE_MODE:
                    out.extend(e.sha for e in store.tree(sha).iteritems())
    except Exception:  # noqa: BLE001, S110 - whatever a tree holds, the check itself meets it and says what
        pass
    return out


def _check_tree(store: Store, tree: bytes) -> dict[str, object]:
    meta: dict[str, object] | None = None
    for name, mode, sha in _entries(store, tree, ""):
        if name in (layout.BOARD, layout.CHAIN):
            data = _file(store, name, mode, sha)
            _record(name, data, "json", name)
            if name == layout.BOARD:
                meta = loads(data)
        elif name == "rigs":
            _dir(mode, name)
            for rname, rmode, rsha in _entries(store, sha, name):
                if not rname.endswith(".json") or not HANDLE_RE.match(rname[:-5]):
                    raise TreeProblem(f"rigs/{rname} is not a rig path")
                _record(f"rigs/{rname}", _file(store, f"rigs/{rname}", rmode, rsha), "rig", rname[:-5])
        elif name in ("wanted", "completions", "attestations"):
            _dir(mode, name)
            kind = {"wanted": "item", "completions": "completion", "attestations": "attestation"}[name]
            _records(store, sha, name, kind)
        elif name == layout.ARCHIVE:  # archived records keep the live layout below archive/
            _dir(mode, name)
            for aname, amode, asha in _entries(store, sha, name):
                akind = {"wanted": "item", "completions": "completion", "attestations": "attestation"}.get(aname)
                if akind is None:
                    raise TreeProblem(f"{name}/{aname} is not an archive path")
                _dir(amode, f"{name}/{aname}")
                _records(store, asha, f"{name}/{aname}", akind)
        elif name == "blobs":
            _dir(mode, name)
            for sname, smode, ssha in _entries(store, sha, name):
                if sname != "sha256":
                    raise TreeProblem(f"blobs/{sname} is not a blob folder")
                _dir(smode, "blobs/sha256")
                found = [(n, m, s) for n, m, s in _entries(store, ssha, "blobs/sha256")]
                attachment_blobs(store, tree, [f"blobs/sha256/{n}" for n, _, _ in found if layout.BLOB_RE.match(n)])
                if any(not layout.BLOB_RE.match(n) for n, _, _ in found):
                    raise TreeProblem("blobs/sha256 holds a file that is not named by its sha256")
        else:
            raise TreeProblem(f"{name} is not a board path")
    if meta is None:
        raise TreeProblem("board.json is missing")
    bid = meta.get("board_id")
    if not isinstance(bid, str) or not BOARD_ID_RE.match(bid):
        raise TreeProblem("board.json has no valid board_id")
    return meta
