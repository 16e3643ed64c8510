"""Git storage through dulwich: blobs, trees and commits written straight to the object store.

No work tree or index: a mutation rewrites only the trees on the paths it changes (three small ones with the
fanned-out layout), so per-commit cost does not grow with the number of items on the board.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dulwich.objects import Blob, Commit, ShaFile, Tree
from dulwich.repo import Repo

MAIN = b"refs/heads/main"
ORIGIN_MAIN = b"refs/remotes/origin/main"
TREE_MODE = 0o040000
FILE_MODE = 0o100644
LOOSE_LIMIT = 2000  # pack loose objects once this many have piled up
LOOSE_CHECK_S = 10.0  # loose objects are counted at most this often by one process
SMALL_PACK = 5000  # objects; a pack this small is folded with the others like it ...
SMALL_PACKS = 8  # ... once there are more than this many
TREE_CACHE = 8192
COMMIT_CACHE = 65536  # a whole history's commits: a full validation walks it twice
BLOB_CACHE_SIZE = 16 << 10


@dataclass
class NewObjects:
    """Objects written by one mutation attempt: exactly what a push must send."""

    objects: list[ShaFile] = field(default_factory=list)

    def add(self, obj: ShaFile) -> None:
        self.objects.append(obj)


def _geometric_cut(packs: list[Any]) -> int:
    """How many of the smallest packs (sorted by size) to fold so that each pack left holds at least twice
    what all smaller ones hold together (git's geometric repack): a fold then rewrites each object only a
    logarithmic number of times, not on every maintenance."""
    sizes = [len(p) for p in packs]
    below = [0]
    for n in sizes:
        below.append(below[-1] + n)
    for i in range(len(sizes) - 1, 0, -1):
        if sizes[i] < 2 * below[i]:
            return i + 1
    return 0


class Store:
    """One bare repository holding the board's history."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = Repo(str(path))
        # dulwich types ids as NewTypes (ObjectID, Ref); this module is the boundary where plain bytes go in.
        self.objects: Any = self.repo.object_store
        self._refs: Any = self.repo.refs
        self._trees: dict[bytes, Tree] = {}  # trees are immutable: parsed once, reused by every validation
        self._blobs: dict[bytes, bytes] = {}  # small blobs (records), likewise
        self._commits: dict[bytes, Commit] = {}
        self._blob_objs: dict[bytes, Blob] = {}
        self._packs: list[Any] | None = None  # the packs `raw` reads first (listed once)
        self._loose_checked = float("-inf")  # when maintain() last counted the loose objects

    @classmethod
    def init_bare(cls, path: Path) -> Store:
        path.mkdir(parents=True, exist_ok=True)
        repo = Repo.init_bare(str(path))
        refs: Any = repo.refs
        refs.set_symbolic_ref(b"HEAD", MAIN)
        repo.close()
        return cls(path)

    def close(self) -> None:
        self.repo.close()

    # --- refs -------------------------------------------------------------------------------------
    def ref(self, name: bytes) -> bytes | None:
        try:
            return bytes(self._refs[name])
        except KeyError:
            return None

    def set_ref(self, name: bytes, new: bytes, old: bytes | None) -> bool:
        """Compare-and-swap a ref; plain assignment would overwrite a concurrent writer."""
        if old is None:
            if self.ref(name) is None:
                return bool(self._refs.add_if_new(name, new))
            return False
        return bool(self._refs.set_if_equals(name, old, new))

    def force_ref(self, name: bytes, new: bytes) -> None:
        if self.ref(name) != new:  # every ref write is an fsync: skip the ones that change nothing
            self._refs[name] = new

    def refs_under(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(full name, sha) of every ref under a prefix ending in "/"."""
        found: dict[bytes, bytes] = self._refs.as_dict(prefix.rstrip(b"/"))
        return [(prefix + name, bytes(sha)) for name, sha in sorted(found.items())]

    def remove_ref(self, name: bytes) -> None:
        if self.ref(name) is not None:
            self._refs.remove_if_equals(name, None)

    # --- reading ----------------------------------------------------------------------------------
    def get(self, sha: bytes) -> ShaFile:
        """Any object; trees and small blobs come from (and go to) the caches every validation reuses."""
        cached: ShaFile | None = self._trees.get(sha) or self._blob_objs.get(sha)
        if cached is not None:
            return cached
        obj: ShaFile = self.objects[sha]
        if isinstance(obj, Tree):
            if len(self._trees) >= TREE_CACHE:
                self._trees.clear()
            self._trees[sha] = obj
        elif isinstance(obj, Blob) and obj.raw_length() <= BLOB_CACHE_SIZE:
            if len(self._blob_objs) >= TREE_CACHE:
                self._blob_objs.clear()
            self._blob_objs[sha] = obj
        return obj

    def raw(self, sha: bytes) -> tuple[int, bytes]:
        """(type number, bytes) of an object, read from the packs first: a cold read of 100,000 records pays
        no per-object look for a loose file (dulwich's own lookup does), nor a parsed object each."""
        packs = self._packs
        if packs is None:
            packs = self._packs = list(self.objects.packs)
        for pack in packs:
            try:
                type_num, chunks = pack.get_raw(sha)
            except KeyError:
                continue
            except Exception:  # noqa: BLE001 - a pack repacked away under us: ask the object store
                self._packs = None
                break
            return type_num, bytes(chunks)
        type_num, data = self.objects.get_raw(sha)
        return type_num, bytes(data)

    def has(self, sha: bytes) -> bool:
        return sha in self.objects

    def tree(self, sha: bytes) -> Tree:
        tree = self._trees.get(sha)
        if tree is None:
            obj = self.objects[sha]
            if not isinstance(obj, Tree):
                raise KeyError(sha)
            if len(self._trees) >= TREE_CACHE:
                self._trees.clear()
            self._trees[sha] = tree = obj
        return tree

    def commit(self, sha: bytes) -> Commit:
        obj = self._commits.get(sha)
        if obj is None:
            found = self.objects[sha]
            assert isinstance(found, Commit)
            if len(self._commits) >= COMMIT_CACHE:
                self._commits.clear()
            self._commits[sha] = obj = found
        return obj

    def tree_id(self, commit_id: bytes) -> bytes:
        tree: bytes = self.commit(commit_id).tree
        return tree

    def lookup(self, tree_id: bytes, path: str) -> tuple[int, bytes] | None:
        """(mode, sha) of the entry at path, or None."""
        mode, sha = TREE_MODE, tree_id
        for part in path.split("/"):
            if mode != TREE_MODE:
                return None
            tree = self.tree(sha)
            try:
                mode, sha = tree[part.encode()]
            except KeyError:
                return None
        return mode, sha

    def read(self, tree_id: bytes, path: str) -> bytes | None:
        entry = self.lookup(tree_id, path)
        if entry is None or entry[0] == TREE_MODE:
            return None
        return self.blob_text(entry[1])

    def listdir(self, tree_id: bytes, path: str) -> list[tuple[str, int, bytes]]:
        """Entries (name, mode, sha) of the directory at path; [] when absent."""
        if path:
            entry = self.lookup(tree_id, path)
            if entry is None or entry[0] != TREE_MODE:
                return []
            tree_id = entry[1]
        tree = self.tree(tree_id)
        return [(e.path.decode("utf-8", "replace"), e.mode, e.sha) for e in tree.iteritems()]

    def blob_text(self, sha: bytes) -> bytes:
        data = self._blobs.get(sha)
        if data is not None:
            return data
        type_num, data = self.raw(sha)  # no dulwich object built: a checkpoint reads every record once
        if type_num != Blob.type_num:
            raise KeyError(sha)
        if len(data) <= BLOB_CACHE_SIZE:
            if len(self._blobs) >= TREE_CACHE:
                self._blobs.clear()
            self._blobs[sha] = data
        return data

    def first_parent_chain(self, head: bytes, stop: bytes | None) -> list[bytes]:
        """Commits from head back to (not including) stop, oldest first."""
        chain: list[bytes] = []
        sha: bytes | None = head
        while sha is not None and sha != stop:
            chain.append(sha)
            parents = self.commit(sha).parents
            sha = parents[0] if parents else None
        chain.reverse()
        return chain

    def is_ancestor(self, ancestor: bytes, head: bytes, limit: int = 100_000) -> bool:
        """Whether `ancestor` is reachable from `head` (first-parent walk: board history is linear)."""
        sha: bytes | None = head
        for _ in range(limit):
            if sha is None:
                return False
            if sha == ancestor:
                return True
            if not self.has(sha):
                return False
            parents = self.commit(sha).parents
            sha = parents[0] if parents else None
        return False

    # --- writing ----------------------------------------------------------------------------------
    def _update_tree(
        self, tree_id: bytes | None, changes: dict[str, bytes | None], new: NewObjects
    ) -> bytes | None:
        tree: Any = Tree()
        if tree_id is not None:
            old = self.tree(tree_id)
            for entry in old.iteritems():
                tree.add(entry.path, entry.mode, entry.sha)
        groups: dict[str, dict[str, bytes | None]] = {}
        for path, data in changes.items():
            head, _, rest = path.partition("/")
            if not rest:
                name = head.encode()
                if data is None:
                    if name in tree:
                        del tree[name]
                else:
                    blob = Blob.from_string(data)
                    new.add(blob)
                    tree.add(name, FILE_MODE, blob.id)
            else:
                groups.setdefault(head, {})[rest] = data
        for head, sub in groups.items():
            name = head.encode()
            existing = tree[name][1] if name in tree and tree[name][0] == TREE_MODE else None
            sub_id = self._update_tree(existing, sub, new)
            if sub_id is None:
                if name in tree:
                    del tree[name]
            else:
                tree.add(name, TREE_MODE, sub_id)
        if not len(tree):
            return None
        new.add(tree)
        sha: bytes = tree.id
        return sha

    def make_commit(
        self,
        parent: bytes | None,
        changes: dict[str, bytes | None],
        message: str,
        author: str,
        new: NewObjects,
        when: float | None = None,
    ) -> bytes:
        """Write a commit applying `changes` (path → bytes, or None to delete) on top of parent."""
        tree_id = self.build_tree(self.tree_id(parent) if parent else None, changes, new)
        return self.commit_tree(parent, tree_id, message, author, new, when)

    def build_tree(self, base: bytes | None, changes: dict[str, bytes | None], new: NewObjects) -> bytes:
        """The tree `changes` make of `base`; its new objects go to `new` (written only by commit_tree/save)."""
        tree_id = self._update_tree(base, changes, new)
        if tree_id is None:
            empty = Tree()
            new.add(empty)
            tree_id = empty.id
        return tree_id

    def entries(self, tree_id: bytes | None) -> dict[bytes, tuple[int, bytes]]:
        """A tree's entries, name → (mode, sha), as dulwich parsed them (a copy: callers may edit it)."""
        if tree_id is None:
            return {}
        tree = self.tree(tree_id)
        parsed = getattr(tree, "_entries", None)
        if isinstance(parsed, dict):
            return dict(parsed)
        return {e.path: (e.mode, e.sha) for e in tree.iteritems()}

    def tree_matches(self, old: bytes | None, new: bytes, changes: dict[str, bytes | None]) -> bool | None:
        """Whether `changes` turn tree `old` into exactly tree `new`, without building anything: only the
        folders on the changed paths are compared entry by entry, every other entry must be identical.
        None when it cannot tell cheaply (a folder emptied away); then build and compare instead."""
        a, b = self.entries(old), self.entries(new)
        groups: dict[str, dict[str, bytes | None]] = {}
        for path, data in changes.items():
            head, _, rest = path.partition("/")
            name = head.encode()
            if rest:
                groups.setdefault(head, {})[rest] = data
                continue
            if data is None:
                if name in b:
                    return False
            elif b.get(name) != (FILE_MODE, Blob.from_string(data).id):
                return False
            a.pop(name, None)
            b.pop(name, None)
        for head, sub in groups.items():
            name = head.encode()
            ea, eb = a.pop(name, None), b.pop(name, None)
            if eb is None:
                return None
            if eb[0] != TREE_MODE:
                return False
            inner = self.tree_matches(ea[1] if ea and ea[0] == TREE_MODE else None, eb[1], sub)
            if inner is not True:
                return inner
        return a == b

    def remember(self, new: NewObjects) -> None:
        """Keep the trees just built (and found equal to a commit's) parsed, for the next lookups."""
        for obj in new.objects:
            if isinstance(obj, Tree):
                if len(self._trees) >= TREE_CACHE:
                    self._trees.clear()
                self._trees[obj.id] = obj

    def save(self, new: NewObjects) -> None:
        """Write the objects as loose files. No look through the packs first: the objects are new by
        construction, and a copy of one already packed is harmless, where each look on a miss costs a scan of
        every pack (and a listing of the pack folder)."""
        for obj in new.objects:
            self.objects.add_object(obj)

    def commit_tree(
        self,
        parent: bytes | None,
        tree_id: bytes,
        message: str,
        author: str,
        new: NewObjects,
        when: float | None = None,
        save: bool = True,
    ) -> bytes:
        """Write a commit of an already built tree (and every object in `new`); `save=False` only adds it to
        `new` (a commit that may never be needed here: board/folding's lane results folded at once)."""
        c: Any = Commit()
        c.tree = tree_id
        c.parents = [parent] if parent else []
        ident = f"{author} <{author}@wl.invalid>".encode()
        c.author = c.committer = ident
        c.author_time = c.commit_time = int(when if when is not None else time.time())
        c.author_timezone = c.commit_timezone = 0
        c.encoding = b"UTF-8"
        c.message = message.encode()
        new.add(c)
        if save:
            self.save(new)
        sha: bytes = c.id
        return sha

    def maintain(self) -> None:
        """Pack loose objects and fold the small packs fetches leave into one, so lookups stay fast: every
        object lookup that misses scans each pack's index, and a worker fetches a pack every poll. The large
        packs (a clone's) are left alone, so this costs what the small ones hold, not the whole history."""
        now = time.monotonic()
        if now - self._loose_checked >= LOOSE_CHECK_S:  # counting them lists up to 256 folders
            self._loose_checked = now
            if sum(1 for _ in self._iter_loose(limit=LOOSE_LIMIT + 1)) > LOOSE_LIMIT:
                self.objects.pack_loose_objects()
        small = sorted((p for p in self.objects.packs if len(p) <= SMALL_PACK), key=len)
        if len(small) > SMALL_PACKS:
            self._fold_packs(small[:_geometric_cut(small)])
        self._packs = None

    def _fold_packs(self, small: list[Any]) -> None:
        if len(small) < 2:
            return
        objects: dict[bytes, ShaFile] = {}
        for pack in small:
            for obj in pack.iterobjects():
                objects.setdefault(obj.id, obj)
        merged = self.objects.add_objects([(o, None) for o in objects.values()])
        keep = merged.name() if merged is not None else None
        for pack in small:
            if pack.name() == keep:
                continue
            remove = getattr(self.objects, "_remove_pack", None)  # dulwich's own, where it has one
            if remove is not None:
                remove(pack)
                continue
            pack.close()
            for path in (pack._data_path, pack._idx_path):  # readers holding it open keep reading it (POSIX)
                Path(path).unlink(missing_ok=True)
            self.objects._pack_cache.pop(Path(pack._basename).name, None)
        self._trees.clear()

    def _iter_loose(self, limit: int) -> Iterator[Path]:
        n = 0
        for d in (self.path / "objects").iterdir():
            if len(d.name) == 2 and d.is_dir():
                for f in d.iterdir():
                    yield f
                    n += 1
                    if n >= limit:
                        return

    # --- bulk reads (board/packs.py) ---------------------------------------------------------------
    def warm(self, objects: dict[bytes, tuple[int, bytes]]) -> None:
        """Serve `raw` and `blob_text` of these objects (hex sha → (type, bytes)) from memory: what a fetch or a
        one-pass read just took in, for the validation and index build that read every record next. Held until
        the packs are listed again (after `maintain`)."""
        from board.packs import Held

        listed = self._packs if self._packs is not None else list(self.objects.packs)
        held = [p.objects for p in listed if isinstance(p, Held)]
        merged = {k: v for h in held for k, v in h.items()} if held else {}
        merged.update(objects)
        self._packs = [Held(merged), *(p for p in listed if not isinstance(p, Held))]

    def preload(self, shas: list[bytes], least: int = 1000) -> int:
        """Read many objects (hex shas) in one pass over the large packs that hold them, rather than one random
        lookup each (which re-inflates every delta chain): for a validation or index build that reads every
        record. Fewer than `least` objects not held already, or a pack of which they are under 1/SPARSE, are
        left to `raw`. Returns how many were read."""
        from board.packs import SPARSE, BadPack, Held, Unsuited, read_pack

        listed = self._packs if self._packs is not None else list(self.objects.packs)
        held = next((p.objects for p in listed if isinstance(p, Held)), {})
        wanted = {s for s in shas if s not in held}
        if len(wanted) < least:
            return 0
        found: dict[bytes, tuple[int, bytes]] = {}
        for pack in sorted((p for p in listed if not isinstance(p, Held)), key=len, reverse=True):
            if len(pack) < least or len(wanted) < least:
                break
            if len(wanted) * SPARSE < len(pack):  # a pass inflates every object: a few are cheaper one by one
                continue
            try:
                got = read_pack(Path(pack._data_path), wanted)
            except (BadPack, Unsuited, OSError):
                continue  # too large to hold, or unreadable: those objects are read one by one
            found.update(got)
            wanted.difference_update(got)
        if found:
            self.warm(found)
        return len(found)
