"""Shell completion of item ids: `eval "$(_WL_COMPLETE=bash_source wl)"` and `wl claim w-<TAB>` lists the board.

The ids come from the local copy only (completion never fetches: a key press must not wait on a network).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

MAX_CANDIDATES = 200  # a hostile board can hold 100,000 items; a shell menu that long helps nobody


def item_ids(home: Path | None, incomplete: str) -> list[CompletionItem]:
    """Ids on the local board starting with `incomplete` (with or without `w-`), titles as help."""
    from board.home import Home, default_home
    from board.service import Board
    from board.text import sanitize

    want = incomplete.lower()
    try:
        with Board(Home(home or default_home())) as board:
            items = board.view().items()
    except Exception:  # noqa: BLE001 - no board, a broken one: completion offers nothing, never a traceback
        return []
    out = []
    for item in sorted(items, key=lambda i: (i.status != "open", i.id)):
        if item.id.startswith(want) or item.id[2:].startswith(want):
            title = sanitize(item.title)
            out.append(CompletionItem(item.id, help=f"[{item.status}] {title[:60]}"))
            if len(out) >= MAX_CANDIDATES:
                break
    return out


if TYPE_CHECKING:
    _ParamType = click.ParamType[str, str]  # generic in click ≥ 8.3, plain before
else:
    _ParamType = click.ParamType


class ItemId(_ParamType):
    """An item id or unique prefix (resolved by the command); completes from the local board."""

    name = "ID"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        home: Any = ctx.find_root().params.get("home")
        return item_ids(Path(home) if home else None, incomplete)


ITEM_ID = ItemId()
