"""The JSON API under /api/: the pages' data, with the same records as the CLI's `--json`.

`/api/items` carries `wl browse --json`'s `items`/`total`/`corrupt` (items as `Item.to_dict()`), and
`/api/items/<id>` carries `wl infer status --json`'s `item`/`job`/`completion`/`evidence`/`evidence_error`/
`attestations` (`wl show --json`'s keys for other items), each with the checks the page shows beside them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wl_infer.web import detail, pages
from wl_infer.web.index import Row


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


def summary(row: Row) -> dict[str, Any]:
    return {
        "model": row.model,
        "backend": row.backend,
        "worker": row.worker,
        "tokens": row.tokens,
        "outcome": row.outcome,
        "verdicts": [{"verifier": b.verifier, "verdict": b.verdict, "signed": b.signed, "current": b.current}
                     for b in row.badges],
    }


async def status(request: Request) -> Response:
    return JSON(pages.hub_of(request).status())


async def items(request: Request) -> Response:
    sel = pages.paged(request)
    rows: list[Row] = sel["rows"]
    index = sel["index"]
    return JSON({
        "items": [r.item.to_dict() for r in rows],
        "total": sel["total"],
        "corrupt": index.state.corrupt,
        "page": sel["page"],
        "pages": sel["pages"],
        "per_page": sel["per_page"],
        "filters": sel["filters"].to_query(),
        "summaries": {r.item.id: summary(r) for r in rows},
        "head": index.state.head,
        "synced_at": pages.hub_of(request).synced_at,
    })


async def item(request: Request) -> Response:
    row = pages.find_row(request, request.path_params["item_id"])
    return JSON(await asyncio.to_thread(detail.build, pages.hub_of(request), row))


async def rigs(request: Request) -> Response:
    return JSON({"rigs": [s.to_dict() for s in pages.hub_of(request).current.leaderboard()]})


async def rig(request: Request) -> Response:
    info = pages.rig_info(request)
    return JSON({
        "rig": info["rig"].to_dict() if info["rig"] else None,
        "stats": info["stats"].to_dict(),
        "worked": [r.item.id for r in info["worked"]],
        "posted": [r.item.id for r in info["posted"]],
        "attested": [{"id": r.item.id, "verdict": b.verdict, "signed": b.signed} for r, b in info["attested"]],
    })


async def dashboard(request: Request) -> Response:
    return JSON(pages.dashboard_data(pages.hub_of(request).current))


def routes() -> list[Route]:
    return [
        Route("/api/status", status),
        Route("/api/items", items),
        Route("/api/items/{item_id}", item),
        Route("/api/rigs", rigs),
        Route("/api/rigs/{handle}", rig),
        Route("/api/dashboard", dashboard),
    ]
