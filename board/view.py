"""Read-only views of one state of the board (one tree), with validation on every read.

A corrupted record names its file and leaves the rest of the board usable: listing skips it (and reports
it); reading it directly raises CorruptRecord.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from board import layout
from board.errors import Ambiguous, CorruptRecord, InvalidId, NotFound
from board.ids import ITEM_RE, normalise_prefix
from board.records import Completion, Item, RecordError, Rig, check_board_meta, loads
from board.store import TREE_MODE, Store


@dataclass
class TreeView:
    store: Store
    tree: bytes
    cache_path: Path | None = None  # per-bucket parse cache (keyed by bucket tree sha)
    corrupt: list[str] = field(default_factory=list)

    # --- single records -------------------------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        return self.store.read(self.tree, path)

    def _record(self, paths: tuple[str, ...], cls: Any) -> Any:
        for path in paths:
            raw = self.read(path)
            if raw is not None:
                try:
                    return cls.decode(raw)
                except RecordError as e:
                    raise CorruptRecord(path, str(e)) from None
        return None

    def item(self, item_id: str) -> Item | None:
        item: Item | None = self._record((layout.item_path(item_id), layout.item_flat_path(item_id)), Item)
        if item is not None and item.id != item_id:
            raise CorruptRecord(layout.item_path(item_id), f"id field says {item.id}")
        return item

    def completion(self, item_id: str) -> Completion | None:
        paths = (layout.completion_path(item_id), layout.completion_flat_path(item_id))
        comp: Completion | None = self._record(paths, Completion)
        if comp is not None and comp.wanted_id != item_id:
            raise CorruptRecord(paths[0], f"wanted_id field says {comp.wanted_id}")
        return comp

    def rig(self, handle: str) -> Rig | None:
        rig: Rig | None = self._record((layout.rig_path(handle),), Rig)
        return rig

    def meta(self) -> dict[str, Any]:
        raw = self.read(layout.BOARD)
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

    def attestations(self, item_id: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for d in (layout.attestation_flat_dir(item_id), layout.attestation_dir(item_id)):
            for name, mode, sha in self.store.listdir(self.tree, d):
                if mode == TREE_MODE or not name.endswith(".json"):
                    continue
                try:
                    out[name[:-5]] = loads(self.store.blob_text(sha))
                except RecordError:
                    self.corrupt.append(f"{d}/{name}")
        return out

    def rigs(self) -> list[Rig]:
        out = []
        for name, mode, sha in self.store.listdir(self.tree, "rigs"):
            if mode == TREE_MODE or not name.endswith(".json"):
                continue
            try:
                out.append(Rig.decode(self.store.blob_text(sha)))
            except RecordError:
                self.corrupt.append(f"rigs/{name}")
        return out

    # --- ids --------------------------------------------------------------------------------------
    def _ids_in(self, path: str) -> list[str]:
        return [
            name[:-5]
            for name, mode, _ in self.store.listdir(self.tree, path)
            if mode != TREE_MODE and name.endswith(".json") and ITEM_RE.match(name[:-5])
        ]

    def resolve(self, prefix: str) -> str:
        """The one item id starting with prefix (unknown → NotFound, several → Ambiguous)."""
        try:
            want = normalise_prefix(prefix)
        except InvalidId:
            raise
        hexpart = want[2:]
        if len(hexpart) >= 2:
            buckets = [hexpart[:2]]
        else:
            buckets = [
                name
                for name, mode, _ in self.store.listdir(self.tree, "wanted")
                if mode == TREE_MODE and name.startswith(hexpart)
            ]
        candidates = [i for b in buckets for i in self._ids_in(f"wanted/{b}") if i.startswith(want)]
        candidates += [i for i in self._ids_in("wanted") if i.startswith(want) and i not in candidates]
        if not candidates:
            raise NotFound(prefix)
        if len(candidates) > 1:
            raise Ambiguous(prefix, sorted(candidates))
        return candidates[0]

    # --- listing ----------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        """Every item on the board; corrupt files are skipped and listed in self.corrupt."""
        cache = self._load_cache()
        fresh: dict[str, list[dict[str, Any]]] = {}
        out: list[Item] = []
        for name, mode, sha in self.store.listdir(self.tree, "wanted"):
            if mode == TREE_MODE:
                key = sha.decode()
                rows = cache.get(key)
                if rows is None:
                    rows = self._parse_dir(f"wanted/{name}", sha)
                fresh[key] = rows
                for row in rows:
                    if "__corrupt__" in row:
                        self.corrupt.append(row["__corrupt__"])
                    else:
                        out.append(Item(**row))
            elif name.endswith(".json"):
                self._parse_file(f"wanted/{name}", sha, out)
        if fresh.keys() != cache.keys():
            self._save_cache(fresh)
        return out

    def _parse_file(self, path: str, sha: bytes, out: list[Item]) -> None:
        try:
            out.append(Item.decode(self.store.blob_text(sha)))
        except RecordError:
            self.corrupt.append(path)

    def _parse_dir(self, path: str, tree_sha: bytes) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name, mode, sha in self.store.listdir(self.tree, path):
            if mode == TREE_MODE or not name.endswith(".json"):
                continue
            try:
                item = Item.decode(self.store.blob_text(sha))
                if item.id != name[:-5]:
                    raise RecordError("file name and id differ")
                rows.append(item.to_dict())
            except RecordError:
                rows.append({"__corrupt__": f"{path}/{name}"})
        return rows

    def _load_cache(self) -> dict[str, list[dict[str, Any]]]:
        if self.cache_path is None:
            return {}
        try:
            data = orjson.loads(self.cache_path.read_bytes())
            return data if isinstance(data, dict) else {}
        except (OSError, orjson.JSONDecodeError):
            return {}

    def _save_cache(self, data: dict[str, list[dict[str, Any]]]) -> None:
        """The cache is only a speed-up: keyed by tree sha, it can never be stale, only missing."""
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(data))
            os.replace(tmp, self.cache_path)
        except OSError:
            pass
