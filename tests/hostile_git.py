"""A participant with push access who writes the commons with git's own plumbing, bypassing `wl` entirely.

`Mallory` keeps a bare clone, builds trees itself (so an entry may be a gitlink, a
symlink, a folder where a file belongs, a file where a folder belongs, or name an object of the wrong type:
trees are written raw with `git hash-object --literally`), commits with `git commit-tree` and pushes with `git push` to the real commons, as anyone could.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GIT = shutil.which("git")
GITLINK = "160000"
SYMLINK = "120000"
FILE = "100644"
TREE = "040000"


def git(cwd: Path, *args: str, input: bytes | None = None) -> bytes:
    if GIT is None:
        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "mallory", "GIT_AUTHOR_EMAIL": "mallory@example.invalid",
           "GIT_COMMITTER_NAME": "mallory", "GIT_COMMITTER_EMAIL": "mallory@example.invalid"}
    res = subprocess.run([GIT, *args], cwd=cwd, input=input, capture_output=True, env=env, timeout=60)
    assert res.returncode == 0, (args, res.stderr.decode(errors="replace"))
    return res.stdout


class Mallory:
    """Pushes hand-built trees to the commons: `changes` maps a path (bytes allowed) to (mode, sha) or None."""

    def __init__(self, commons: Path, work: Path) -> None:
        self.commons = commons
        self.work = work
        git(work.parent, "clone", "--quiet", "--bare", str(commons), str(work))

    def blob(self, data: bytes) -> str:
        return git(self.work, "hash-object", "-w", "--stdin", input=data).decode().strip()

    def tree(self, entries: dict[bytes, tuple[str, str]]) -> str:
        """A tree object with exactly these entries, written raw (`--literally`: no mode/type checks)."""

        def order(name: bytes) -> bytes:  # git sorts a folder as if its name ended with "/"
            return name + b"/" if entries[name][0] == TREE else name

        raw = b"".join(
            entries[name][0].lstrip("0").encode() + b" " + name + b"\0" + bytes.fromhex(entries[name][1])
            for name in sorted(entries, key=order)
        )
        return git(self.work, "hash-object", "-t", "tree", "--literally", "-w", "--stdin", input=raw).decode().strip()

    def _ls(self, tree: str | None) -> dict[bytes, tuple[str, str]]:
        if tree is None:
            return {}
        out: dict[bytes, tuple[str, str]] = {}
        for record in git(self.work, "ls-tree", "-z", tree).split(b"\0"):
            if record:
                meta, name = record.split(b"\t", 1)
                mode, _, sha = meta.decode().split(" ")
                out[name] = (mode, sha)
        return out

    def _rebuild(self, tree: str | None, changes: dict[bytes, tuple[str, str] | None]) -> str:
        entries = self._ls(tree)
        nested: dict[bytes, dict[bytes, tuple[str, str] | None]] = {}
        for path, entry in changes.items():
            head, sep, rest = path.partition(b"/")
            if not sep:
                if entry is None:
                    entries.pop(head, None)
                else:
                    entries[head] = entry
            else:
                nested.setdefault(head, {})[rest] = entry
        for head, sub in nested.items():
            old = entries.get(head)
            entries[head] = (TREE, self._rebuild(old[1] if old and old[0] == TREE else None, sub))
        return self.tree(entries)

    def commit(self, changes: dict[str | bytes, tuple[str, str] | None], message: str = "hand edit") -> str:
        """A commit on this clone's main (not pushed): for trees git itself refuses to send."""
        git(self.work, "fetch", "--quiet", "origin", "+refs/heads/main:refs/heads/main")
        head = git(self.work, "rev-parse", "refs/heads/main").decode().strip()
        as_bytes = {p.encode() if isinstance(p, str) else p: e for p, e in changes.items()}
        tree = self._rebuild(f"{head}^{{tree}}", as_bytes)
        commit = git(self.work, "commit-tree", tree, "-p", head, "-m", message).decode().strip()
        git(self.work, "update-ref", "refs/heads/main", commit)
        return commit

    def push(self, changes: dict[str | bytes, tuple[str, str] | None], message: str = "hand edit") -> str:
        commit = self.commit(changes, message)
        git(self.work, "push", "--quiet", "origin", f"{commit}:refs/heads/main")
        return commit

    def file(self, data: bytes) -> tuple[str, str]:
        return (FILE, self.blob(data))
