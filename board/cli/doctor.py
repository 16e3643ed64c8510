"""`wl doctor`: check the home, the key, the remote and the board; plugins add their own checks.

Plugins contribute checks through the `wl.doctor` entry point group: a function taking the home path and
returning (name, ok, detail) tuples; wl_infer uses it to report which backends are usable here.
"""

from __future__ import annotations

import contextlib
import stat
from typing import Any

import click

from board.cli.main import Obj
from board.cli.output import emit, say
from board.text import sanitize

Check = tuple[str, bool | None, str]  # ok None: optional and absent here (shown as such, never a failure)


def _board_checks(obj: Obj) -> list[Check]:
    from board.errors import BoardError
    from board.service import Board

    home = obj.home
    checks: list[Check] = []
    checks.append(("home", home.path.is_dir(), str(home.path)))
    try:
        cfg = home.load_config()
        checks.append(("config", True, f"handle={cfg.get('handle')} remote={cfg.get('remote') or '(none)'}"))
    except BoardError as e:  # nothing else can be checked without it: one line, exit 1
        return [("config", False, str(e))]
    key = home.path / "key"
    if key.exists():
        mode = stat.S_IMODE(key.stat().st_mode)
        checks.append(("key file", mode & 0o077 == 0, f"{key} mode {mode:o}" + ("" if mode & 0o077 == 0 else " (run chmod 600)")))
    else:
        checks.append(("key file", False, f"{key} missing (wl init or wl join creates it)"))
    if not home.exists():
        checks.append(("board", False, "no local board (wl init or wl join)"))
        return checks
    try:
        board = Board(home)
    except BoardError as e:
        checks.append(("board", False, str(e)))
        return checks
    try:
        if board.remote is not None:
            with contextlib.suppress(BoardError):
                board.refresh()  # validate what the remote holds now; offline, the last validated state
        checks.append(_ledger_check(board))
        view = board.view()
        meta = view.meta()
        n = len(view.items())
        bad = list(view.corrupt)
        checks.append(("board", not bad, f"{meta['name']} ({meta['board_id']}): {n} items" + (f", corrupt: {', '.join(bad[:5])}" if bad else "")))
        if board.handle:
            rig = view.rig(board.handle)
            checks.append(("registered", rig is not None, board.handle if rig else f"{board.handle} not on the board"))
        pending = board.pending()
        checks.append(("pending", True, f"{len(pending)} local operation(s) not yet pushed" if pending else "nothing unpushed"))
        if board.remote is not None:
            try:
                head = board.remote.head()
                checks.append(("remote", True, f"{board.remote.url} at {(head or b'(empty)').decode()[:12]}"))
            except BoardError as e:
                checks.append(("remote", False, str(e)))
    except BoardError as e:
        checks.append(("board", False, str(e)))
    finally:
        board.close()
    return checks


def _ledger_check(board: Any) -> Check:
    state = board.state()
    if state.legacy:
        return ("ledger", True, "wl-board/1 board, not validated yet: the next mutation checkpoints it")
    if state.excluded:
        return ("ledger", False, state.excluded[0].line() + " (run wl sync to repair)")
    if state.dropped:
        vanished = ", ".join(v[:12] for v in state.vanished[:5])
        return ("ledger", False, f"the remote's history was rewritten (vanished: {vanished}); "
                f"{len(state.dropped)} operation(s) to republish (run wl sync)")
    return ("ledger", True, f"every commit validated, up to {state.commit[:12]}")


def _plugin_checks(obj: Obj) -> list[Check]:
    from board.entrypoints import entry_points

    out: list[Check] = []
    for ep in entry_points("wl.doctor"):
        try:
            out.extend(ep.load()(obj.home.path))
        except Exception as e:  # noqa: BLE001 - a broken plugin check is itself a finding
            out.append((f"plugin {ep.name}", False, f"{type(e).__name__}: {e}"))
    return out


@click.command()
@click.pass_obj
def doctor(obj: Obj) -> None:
    """Check the home, key file, remote, board records and which backends are usable (exit 1 if the board part fails)."""
    board_checks = _board_checks(obj)
    config_ok = all(ok for name, ok, _ in board_checks if name == "config")
    checks = board_checks + (_plugin_checks(obj) if config_ok else [])
    data: dict[str, Any] = {
        "ok": all(ok is not False for _, ok, _ in checks),
        "checks": [{"name": n, "ok": ok, "absent": ok is None, "detail": d} for n, ok, d in checks],
    }

    def human() -> None:
        for name, ok, detail in checks:
            mark, style = ("✓", None) if ok else ("–", "dim") if ok is None else ("✗", "red")
            say(f"{mark} {name:<16} {sanitize(detail)}" + (" (absent)" if ok is None else ""), style)

    emit(data, human)
    if not all(ok is not False for _, ok, _ in board_checks):  # backends a machine lacks are findings, not failures
        raise click.exceptions.Exit(1)
