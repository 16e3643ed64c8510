"""Read-only views of one state of the board (one tree), with validation on every read.

Every participant can push to the commons, so the tree may hold anything git can store: gitlinks, symlinks,
folders where files belong and files where folders belong, missing objects, undecodable names, JSON that
does not parse or does not validate. A reader never fails a command because of another participant's entry:
what is not a well-formed record is skipped, remembered in `skipped` (path → reason) and logged once as a
warning on the `wl.board` logger (the CLI prints `wl: warning: skipped PATH: REASON`). Reading one record
directly raises CorruptRecord only for a regular file that fails validation, so a command about that very
record says why it cannot proceed.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dulwich.objects import Blob, Tree

from board import layout, parsecache
from board.errors import Ambiguous, Archived, CorruptRecord, NotFound
from board.ids import ITEM_RE, normalise_prefix
from board.records import Completion, Item, RecordError, Rig, check_board_meta, item_dict, loads
from board.store import TREE_MODE, Store

if TYPE_CHECKING:
    from board.index import Query, Result

log = logging.getLogger("wl.board")
log.addHandler(logging.NullHandler())  # a library stays quiet unless its user (the CLI) routes warnings

CACHE_VERSION = 2  # bump whenever decoding becomes stricter, so rows cached by a laxer reader are re-checked
MAX_RECORD_BYTES = {"item": 2 << 20, "completion": 20 << 20, "rig": 1 << 20, "attestation": 1 << 20}
Entry = tuple[str, int, bytes]


class BadEntry(Exception):
    """A tree entry that is not what the layout says belongs there; `reason` says what it is instead."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _what(mode: int) -> str:
    if mode == TREE_MODE:
        return "a folder"
    if mode == 0o160000:
        return "a gitlink (submodule)"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a file"
    return f"an entry of mode {mode:o}"


@dataclass
class TreeView:
    store: Store
    tree: bytes
    cache_path: Path | None = None  # per-bucket parse cache (keyed by bucket name and tree sha)
    skipped: dict[str, str] = field(default_factory=dict)  # path → why it was skipped
    overlay: dict[str, Item] = field(default_factory=dict)  # item id → its record as a claim lane leaves it
    overlay_files: dict[str, bytes] = field(default_factory=dict)  # path → blob sha: a lane result's files
    reread: list[str] = field(default_factory=list)  # buckets the last query re-read into the index

    @property
    def corrupt(self) -> list[str]:
        """Paths skipped so far, in the order they were met."""
        return list(self.skipped)

    def _skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            log.warning("skipped %s: %s", path, reason)

    # --- safe tree access -------------------------------------------------------------------------
    def _object(self, path: str, sha: bytes, kind: type[Blob] | type[Tree]) -> Any:
        try:
            obj = self.store.get(sha)
        except KeyError:
            raise BadEntry(path, "its object is missing from the repository") from None
        except Exception as e:  # noqa: BLE001 - a crafted object dulwich cannot parse is just a bad entry
            raise BadEntry(path, f"its object cannot be read ({type(e).__name__})") from None
        if not isinstance(obj, kind):
            raise BadEntry(path, f"its object is a {obj.type_name.decode()}, not a {kind.type_name.decode()}")
        return obj

    def _entries(self, path: str, tree_sha: bytes, bad: list[BadEntry] | None = None) -> list[Entry]:
        """The folder's entries; one whose name is not UTF-8 is skipped (or collected in `bad`)."""
        tree = self._object(path or "(root)", tree_sha, Tree)
        out: list[Entry] = []
        try:
            raw = list(tree.iteritems())
        except Exception as exc:  # noqa: BLE001 - malformed tree object
            raise BadEntry(path or "(root)", f"the folder cannot be read ({type(exc).__name__})") from None
        for e in raw:
            try:
                name = e.path.decode("utf-8")
            except UnicodeDecodeError:
                shown = e.path.decode("utf-8", "backslashreplace")
                entry = BadEntry(f"{path}/{shown}" if path else shown, "its name is not UTF-8")
                if bad is None:
                    self._skip(entry.path, entry.reason)
                else:
                    bad.append(entry)
                continue
            out.append((name, e.mode, e.sha))
        return out

    def _lookup(self, path: str) -> tuple[int, bytes] | None:
        """(mode, sha) at path; None when absent; BadEntry when a folder on the way is not a folder."""
        mode, sha = TREE_MODE, self.tree
        walked = ""
        for part in path.split("/"):
            if mode != TREE_MODE:
                raise BadEntry(walked, f"{_what(mode)} where a folder belongs")
            tree = self._object(walked or "(root)", sha, Tree)
            try:
                mode, sha = tree[part.encode()]
            except KeyError:
                return None
            walked = f"{walked}/{part}" if walked else part
        return mode, sha

    def _file(self, path: str) -> bytes | None:
        """The bytes of the regular file at path; None when absent; BadEntry when it is anything else."""
        entry = self._lookup(path)
        if entry is None:
            return None
        mode, sha = entry
        if not stat.S_ISREG(mode):
            raise BadEntry(path, f"{_what(mode)} where a file belongs")
        blob: Blob = self._object(path, sha, Blob)
        return blob.as_raw_string()

    def _listdir(self, path: str) -> list[Entry]:
        """Entries of the folder at path ([] when absent; skipped with a warning when not a folder)."""
        try:
            entry = self._lookup(path)
            if entry is None:
                return []
            mode, sha = entry
            if mode != TREE_MODE:
                raise BadEntry(path, f"{_what(mode)} where a folder belongs")
            return self._entries(path, sha)
        except BadEntry as e:
            self._skip(e.path, e.reason)
            return []

    # --- single records -------------------------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        """The file at path, or None (an entry that is not a regular file is skipped with a warning)."""
        try:
            sha = self.overlay_files.get(path)
            return self._file(path) if sha is None else self.store.blob_text(sha)
        except BadEntry as e:
            self._skip(e.path, e.reason)
            return None

    def _record(self, paths: tuple[str, ...], cls: Any, kind: str, strict: bool = True) -> Any:
        for path in paths:
            raw = self.read(path)
            if raw is None:
                continue
            try:
                if len(raw) > MAX_RECORD_BYTES[kind]:
                    raise RecordError(f"larger than {MAX_RECORD_BYTES[kind] >> 20} MiB")
                return cls.decode(raw)
            except RecordError as e:
                if strict:
                    raise CorruptRecord(path, str(e)) from None
                self._skip(path, str(e))
        return None

    def item(self, item_id: str) -> Item | None:
        if item_id in self.overlay:
            return Item.from_dict(self.overlay[item_id].to_dict())
        item: Item | None = self._record(
            (layout.item_path(item_id), layout.item_flat_path(item_id)), Item, "item"
        )
        if item is not None and item.id != item_id:
            raise CorruptRecord(layout.item_path(item_id), f"id field says {item.id}")
        if item is None and self.read(layout.archive_item_path(item_id)) is not None:
            raise Archived(item_id)  # history now: no rule may read it as live, and its id stays taken
        return item

    # --- archived records (board/archive.py moves them; show and log still find them) --------------
    def archived_item(self, item_id: str) -> Item | None:
        item: Item | None = self._record((layout.archive_item_path(item_id),), Item, "item")
        if item is not None and item.id != item_id:
            raise CorruptRecord(layout.archive_item_path(item_id), f"id field says {item.id}")
        return item

    def archived_completion(self, item_id: str) -> Completion | None:
        path = layout.archive_completion_path(item_id)
        comp: Completion | None = self._record((path,), Completion, "completion", strict=False)
        if comp is not None and comp.wanted_id != item_id:
            self._skip(path, f"wanted_id field says {comp.wanted_id}")
            return None
        return comp

    def archived_attestations(self, item_id: str) -> dict[str, dict[str, Any]]:
        return {name: data for _, name, data in self._json_files(layout.archive_attestation_dir(item_id), "attestation")}

    def files(self, path: str) -> list[tuple[str, bytes]]:
        """(path, bytes) of each regular `.json` file in a folder (what the archive rule moves)."""
        out = []
        for name, mode, sha in self._listdir(path):
            if name.endswith(".json") and stat.S_ISREG(mode):
                full = f"{path}/{name}"
                try:
                    out.append((full, self._object(full, sha, Blob).as_raw_string()))
                except BadEntry as e:
                    self._skip(e.path, e.reason)
        return out

    def completion(self, item_id: str) -> Completion | None:
        """The item's completion; one that does not validate is skipped (with a warning), never fatal."""
        paths = (layout.completion_path(item_id), layout.completion_flat_path(item_id))
        for path in paths:
            comp: Completion | None = self._record((path,), Completion, "completion", strict=False)
            if comp is None:
                continue
            if comp.wanted_id != item_id:
                self._skip(path, f"wanted_id field says {comp.wanted_id}")
                continue
            return comp
        return None

    def rig(self, handle: str) -> Rig | None:
        rig: Rig | None = self._record((layout.rig_path(handle),), Rig, "rig")
        if rig is not None and rig.handle != handle:
            raise CorruptRecord(layout.rig_path(handle), f"handle field says {rig.handle}")
        return rig

    def meta(self) -> dict[str, Any]:
        try:
            raw = self._file(layout.BOARD)
        except BadEntry as e:
            raise CorruptRecord(e.path, e.reason) from None
        if raw is None:
            raise CorruptRecord(layout.BOARD, "missing")
        try:
            return check_board_meta(loads(raw))
        except RecordError as e:
            raise CorruptRecord(layout.BOARD, str(e)) from None

    def chain(self) -> dict[str, Any] | None:
        raw = self.read(layout.CHAIN)
        if raw is None:
            return None
        try:
            return loads(raw)
        except RecordError as e:
            raise CorruptRecord(layout.CHAIN, str(e)) from None

    def blob(self, hexdigest: str) -> bytes | None:
        return self.read(layout.blob_path(hexdigest))

    def _json_files(self, path: str, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(path, name without .json, object) for each readable JSON file in a folder; the rest skipped."""
        out = []
        for name, mode, sha in self._listdir(path):
            if not name.endswith(".json"):
                continue
            full = f"{path}/{name}"
            try:
                if not stat.S_ISREG(mode):
                    raise BadEntry(full, f"{_what(mode)} where a file belongs")
                raw = self._object(full, sha, Blob).as_raw_string()
                if len(raw) > MAX_RECORD_BYTES[kind]:
                    raise RecordError(f"larger than {MAX_RECORD_BYTES[kind] >> 20} MiB")
                out.append((full, name[:-5], loads(raw)))
            except BadEntry as e:
                self._skip(e.path, e.reason)
            except RecordError as e:
                self._skip(full, str(e))
        return out

    def attestations(self, item_id: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for d in (layout.attestation_flat_dir(item_id), layout.attestation_dir(item_id)):
            for _, name, data in self._json_files(d, "attestation"):
                out[name] = data
        return out

    def rigs(self) -> list[Rig]:
        out = []
        for path, name, data in self._json_files("rigs", "rig"):
            try:
                rig = Rig.from_dict(data)
                if rig.handle != name:
                    raise RecordError(f"handle field says {rig.handle}")
                out.append(rig)
            except RecordError as e:
                self._skip(path, str(e))
        return out

    # --- ids --------------------------------------------------------------------------------------
    def _ids_in(self, path: str) -> list[str]:
        """Item ids named by regular files in a folder (anything else there is skipped with a warning)."""
        out = []
        for name, mode, _ in self._listdir(path):
            if not name.endswith(".json") or not ITEM_RE.match(name[:-5]):
                continue
            if stat.S_ISREG(mode):
                out.append(name[:-5])
            else:
                self._skip(f"{path}/{name}", f"{_what(mode)} where a file belongs")
        return out

    def resolve(self, prefix: str) -> str:
        """The one item id starting with prefix (unknown → NotFound, several → Ambiguous)."""
        want = normalise_prefix(prefix)
        candidates = self._matching("wanted", want)
        if not candidates:  # an archived item is still found (show, log); rules then refuse it as not live
            candidates = self._matching(layout.archived("wanted"), want, flat=False)
        if not candidates:
            raise NotFound(prefix)
        if len(candidates) > 1:
            raise Ambiguous(prefix, sorted(candidates))
        return candidates[0]

    def _matching(self, top: str, want: str, flat: bool = True) -> list[str]:
        hexpart = want[2:]
        if len(hexpart) >= 2:
            buckets = [hexpart[:2]]
        else:
            buckets = [name for name, mode, _ in self._listdir(top) if mode == TREE_MODE and name.startswith(hexpart)]
        candidates = [i for b in buckets for i in self._ids_in(f"{top}/{b}") if i.startswith(want)]
        if flat:
            candidates += [i for i in self._ids_in(top) if i.startswith(want) and i not in candidates]
        return candidates

    # --- listing ----------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        """Every item on the board; entries that are not valid items are skipped (see `skipped`)."""
        cache = self._load_cache()
        fresh: dict[str, list[dict[str, Any]]] = {}
        out: list[Item] = []
        flat: list[Entry] = []
        for name, mode, sha in self._listdir("wanted"):
            path = f"wanted/{name}"
            if mode != TREE_MODE:
                if name.endswith(".json"):
                    flat.append((name, mode, sha))
                elif len(name) == 2:
                    self._skip(path, f"{_what(mode)} where a folder belongs")
                continue
            key = f"{name}:{sha.decode()}"
            rows = cache.get(key)
            items = self._from_rows(rows) if rows is not None else None
            if items is None:
                rows = self._parse_dir(path, name, sha)
                items = self._from_rows(rows) or []
            fresh[key] = rows  # type: ignore[assignment]
            out.extend(items)
        seen = {i.id for i in out}
        for name, mode, sha in flat:
            item = self._parse_flat(f"wanted/{name}", name, mode, sha)
            if item is not None and item.id not in seen:
                seen.add(item.id)
                out.append(item)
        if fresh.keys() != cache.keys():
            self._save_cache(fresh)
        if self.overlay:
            out = [Item.from_dict(self.overlay[i.id].to_dict()) if i.id in self.overlay else i for i in out]
        return out

    # --- the browse index (board/index.py) -------------------------------------------------------------
    def query(self, q: Query) -> Result:
        """The items browse lists: every listing goes through here (served by the index when there is one)."""
        from board.index import BrowseIndex, overlaid, scan_view

        if self.cache_path is None:
            return scan_view(self, q)  # items() applies any overlay itself
        index = BrowseIndex(self.cache_path.with_name("index.sqlite"), str(self.meta().get("board_id", "")))
        self.reread = []

        def ask(sub: Query) -> Result:
            result = index.query(self, sub)
            self.reread += index.reread
            return result

        overlay = getattr(self, "overlay", None)  # item id → Item: claim lanes folded over main (board/lanes.py)
        return overlaid(q, overlay, ask) if overlay and not q.archived else ask(q)

    def buckets(self, top: str) -> tuple[dict[str, bytes], list[Entry]]:
        """The bucket folders under `top` (name → tree sha) and its flat `.json` entries."""
        out: dict[str, bytes] = {}
        flat: list[Entry] = []
        for name, mode, sha in self._listdir(top):
            if mode == TREE_MODE:
                out[name] = sha
            elif name.endswith(".json"):
                flat.append((name, mode, sha))
            elif len(name) == 2:
                self._skip(f"{top}/{name}", f"{_what(mode)} where a folder belongs")
        return out, flat

    def bucket_rows(self, top: str, name: str, sha: bytes) -> list[dict[str, Any]]:
        return self._parse_dir(f"{top}/{name}", name, sha)

    def flat_rows(self, top: str, flat: list[Entry]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name, mode, sha in flat:
            try:
                rows.append({"item": item_dict(self._check_item(f"{top}/{name}", name, mode, sha))})
            except BadEntry as e:
                rows.append({"skip": e.path, "reason": e.reason})
            except RecordError as e:
                rows.append({"skip": f"{top}/{name}", "reason": str(e)})
        return rows

    def note_skip(self, path: str, reason: str) -> None:
        self._skip(path, reason)

    def rows_items(self, rows: list[dict[str, Any]]) -> list[Item]:
        return self._from_rows(rows) or []

    def _from_rows(self, rows: list[dict[str, Any]]) -> list[Item] | None:
        """Items from cached rows; None if a row is not what this version writes (then the bucket is re-read)."""
        out = []
        try:
            for row in rows:
                if "skip" in row:
                    self._skip(str(row["skip"]), str(row["reason"]))
                else:
                    out.append(Item(**row["item"]))
        except (TypeError, KeyError):
            return None
        return out

    def _blob_bytes(self, path: str, sha: bytes) -> bytes:
        """A blob's bytes without building a dulwich object (what a cold read of every item pays)."""
        try:
            type_num, raw = self.store.raw(sha)
        except KeyError:
            raise BadEntry(path, "its object is missing from the repository") from None
        except Exception as e:  # noqa: BLE001 - a crafted object dulwich cannot parse is just a bad entry
            raise BadEntry(path, f"its object cannot be read ({type(e).__name__})") from None
        if type_num != Blob.type_num:
            return bytes(self._object(path, sha, Blob).as_raw_string())  # raises BadEntry naming the type
        return raw

    def _check_item(self, path: str, name: str, mode: int, sha: bytes) -> Item:
        if not stat.S_ISREG(mode):
            raise BadEntry(path, f"{_what(mode)} where a file belongs")
        raw = self._blob_bytes(path, sha)
        if len(raw) > MAX_RECORD_BYTES["item"]:
            raise RecordError(f"larger than {MAX_RECORD_BYTES['item'] >> 20} MiB")
        item = Item.decode(raw)
        if item.id != name[:-5]:
            raise RecordError(f"file name and id differ (id field says {item.id})")
        return item

    def _parse_flat(self, path: str, name: str, mode: int, sha: bytes) -> Item | None:
        try:
            return self._check_item(path, name, mode, sha)
        except BadEntry as e:
            self._skip(e.path, e.reason)
        except RecordError as e:
            self._skip(path, str(e))
        return None

    def _parse_dir(self, path: str, bucket: str, tree_sha: bytes) -> list[dict[str, Any]]:
        bad: list[BadEntry] = []
        try:
            entries = self._entries(path, tree_sha, bad)
        except BadEntry as e:
            return [{"skip": e.path, "reason": e.reason}]
        rows: list[dict[str, Any]] = [{"skip": e.path, "reason": e.reason} for e in bad]
        for name, mode, sha in entries:
            if not name.endswith(".json"):
                continue
            full = f"{path}/{name}"
            try:
                item = self._check_item(full, name, mode, sha)
                if layout.bucket(item.id) != bucket:
                    raise RecordError(f"belongs in wanted/{layout.bucket(item.id)}/, not {path}/")
                rows.append({"item": item_dict(item)})
            except BadEntry as e:
                rows.append({"skip": e.path, "reason": e.reason})
            except RecordError as e:
                rows.append({"skip": full, "reason": str(e)})
        return rows

    def _load_cache(self) -> dict[str, list[dict[str, Any]]]:
        return parsecache.load(self.cache_path, CACHE_VERSION) if self.cache_path is not None else {}

    def _save_cache(self, data: dict[str, list[dict[str, Any]]]) -> None:
        """The cache is only a speed-up: keyed by tree sha, it can never be stale, only missing."""
        if self.cache_path is not None:
            parsecache.save(self.cache_path, CACHE_VERSION, data)
