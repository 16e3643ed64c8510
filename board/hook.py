"""Server-side enforcement: a `pre-receive` hook that validates pushed commits exactly as every rig does.

git runs it with the pushed ref updates on stdin (`<old> <new> <ref>` per line) and the pushed objects in a
quarantine object directory; a non-zero exit refuses the whole push and git relays our one-line reason to
the pusher. Installed by `wl hook install BARE_REPO`; it runs the interpreter that installed it.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from board import layout
from board.ledger import InvalidBoard, Ledger
from board.store import MAIN, Store

ZERO = "0" * 40
CACHE = "wl-ledger.json"
MARK = "# installed by wl hook install"


def hook_script(python: str = sys.executable) -> str:
    return f"#!/bin/sh\n{MARK}\nexec {shlex.quote(python)} -m board.hook\n"


def seed(repo: Path) -> list[str]:
    """Validate the history already there once, so the first push costs one commit; returns what fails."""
    store = Store(repo)
    try:
        head = store.ref(MAIN)
        if head is None:
            return []
        try:
            _, found = Ledger(store, repo / CACHE).advance(head)
        except InvalidBoard as e:
            return [str(e)]
        return [b.line() for b in found.bad]
    finally:
        store.close()


def install(repo: Path, force: bool = False) -> Path:
    """Write hooks/pre-receive into a bare repository (refusing to replace a hook someone else wrote)."""
    from board.errors import UsageError

    if not (repo / "objects").is_dir() or not (repo / "refs").is_dir():
        raise UsageError(f"{repo} is not a bare git repository")
    path = repo / "hooks" / "pre-receive"
    if path.exists() and MARK not in path.read_text(errors="replace") and not force:
        raise UsageError(f"{path} already exists and was not written by wl (use --force to replace it)")
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(".pre-receive.tmp")
    tmp.write_text(hook_script())
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path


def _open(git_dir: Path) -> Store:
    """The repository plus the push's quarantined objects, which only exist there until we accept."""
    store = Store(git_dir)
    quarantine = os.environ.get("GIT_QUARANTINE_PATH") or os.environ.get("GIT_OBJECT_DIRECTORY")
    if quarantine and Path(quarantine).resolve() != (git_dir / "objects").resolve():
        from dulwich.object_store import DiskObjectStore, OverlayObjectStore

        incoming = DiskObjectStore(quarantine)
        store.objects = OverlayObjectStore([incoming, store.repo.object_store], add_store=incoming)
    return store


def check(git_dir: Path, updates: list[tuple[str, str, str]]) -> str | None:
    """None when every update may land, else the reason to refuse the push."""
    for old, new, ref in updates:
        if layout.lane_item(ref.encode()) is not None:
            reason = _check_lane(git_dir, ref, old, new)
            if reason is not None:
                return reason
            continue
        if ref.encode() != MAIN:
            continue
        if new == ZERO:
            return "refusing to delete the board's main branch"
        store = _open(git_dir)
        try:
            if old != ZERO and not store.is_ancestor(old.encode(), new.encode()):
                return f"refusing a history rewrite: {old[:12]} is not in the pushed history"
            ledger = Ledger(store, git_dir / CACHE)
            try:
                _, found = ledger.advance(new.encode(), save=False)
            except InvalidBoard as e:
                return str(e)
            if found.bad:
                return found.bad[0].line()
            ledger.advance(new.encode())  # valid: keep the cache, so the next push costs little
        finally:
            store.close()
    return None


def _check_lane(git_dir: Path, ref: str, old: str, new: str) -> str | None:
    """A claim lane may be created or moved only to a lane every reader folds on the current main state, and
    deleted only once it holds no live claim (its item's record on main moved on, or it ends unclaimed)."""
    from board.ids import utcnow
    from board.lanes import LaneProblem, fold
    from board.ops import lease_expired
    from board.view import TreeView

    item_id = layout.lane_item(ref.encode())
    assert item_id is not None
    store = _open(git_dir)
    try:
        head = store.ref(MAIN)
        if head is None:
            return "there is no board to claim on"
        state, _ = Ledger(store, git_dir / CACHE).advance(head, save=False)
        main = TreeView(store, state.tree.encode())
        tip = new if new != ZERO else old
        if tip == ZERO:
            return None
        try:
            lane = fold(store, main, state.board_id, item_id, tip.encode())
        except LaneProblem as e:
            return f"claim lane of {item_id}: {e}" if new != ZERO else None
        except Exception:  # noqa: BLE001 - a ref to a blob, a tree, a missing object: no lane at all
            return f"claim lane of {item_id} is not made of wl commits" if new != ZERO else None
        def live(folded: Any) -> bool:  # a claim in its lease, or a result main does not hold yet
            if folded is None:
                return False
            return folded.done is not None or (folded.item.status == "claimed" and not lease_expired(folded.item, utcnow()))

        if new == ZERO:
            return f"refusing to delete the live claim lane of {item_id}" if live(lane) else None
        if lane is None:
            return f"claim lane of {item_id} does not build on its current record"
        if old != ZERO:
            try:
                before = fold(store, main, state.board_id, item_id, old.encode())
            except Exception:  # noqa: BLE001 - what it held was no lane: anything valid may replace it
                before = None
            keeps = before is not None and (old.encode() in lane.commits or (
                before.done is None and lane.item.claimed_by == before.item.claimed_by))
            if live(before) and not keeps:
                return f"refusing to replace the live claim lane of {item_id} with one that drops it"
        return None
    except InvalidBoard as e:
        return str(e)
    finally:
        store.close()


def main() -> int:
    git_dir = Path(os.environ.get("GIT_DIR", ".")).resolve()
    updates = []
    for line in sys.stdin.read().splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    try:
        reason = check(git_dir, updates)
    except Exception as e:  # noqa: BLE001 - a hook that cannot check must refuse, in one line
        reason = f"could not validate the push ({type(e).__name__}: {e})"
    if reason is not None:
        print(f"wl: push refused: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
