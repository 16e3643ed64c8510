"""HTML pages: the board, an item, rigs, a rig, the dashboard, and (with --allow-post) the post and verify forms.

Every value from the board goes through Jinja2 with autoescape on; no template marks board data `|safe`.
Query parameters are validated before use; an unknown or malformed id is a 404 page, never a traceback.
"""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from wl_infer.web import charts, detail
from wl_infer.web.app import CSRF_COOKIE, HERE, Hub, csrf_ok
from wl_infer.web.data import STATUSES, TYPES, backend_names
from wl_infer.web.index import VERDICTS, Filters, Index, Row

ID_RE = re.compile(r"^(w-)?[0-9a-f]{1,10}\Z")
HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
PER_PAGE = (25, 50, 100, 200)
MODES = ("auto", "rerun", "prefill")

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(lease_left=detail.lease_left, ago=detail.ago_text, VERDICTS=VERDICTS)
_env.filters["compact"] = lambda v: orjson.dumps(v, default=str).decode()  # plain text: still autoescaped


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    hub = hub_of(request)
    index = hub.current
    context.update(
        request=request,
        meta=index.state.meta,
        head=index.state.head,
        synced_at=hub.synced_at,
        sync_error=hub.sync_error,
        me=hub.source.handle,
        allow_post=hub.allow_post,
        csrf=hub.csrf if hub.allow_post else "",
        corrupt=index.state.corrupt,
        now=datetime.now(UTC),
    )
    response = HTMLResponse(_env.get_template(name).render(**context), status_code=status_code)
    if hub.allow_post:
        response.set_cookie(CSRF_COOKIE, hub.csrf, httponly=True, samesite="strict", path="/")
    return response


def _choice(value: str | None, choices: tuple[str, ...] | list[str]) -> str:
    return value if value is not None and value in choices else ""


def _text(value: str | None, limit: int = 200) -> str:
    return (value or "").strip()[:limit]


def filters_from(request: Request, index: Index) -> Filters:
    q = request.query_params
    worker = _text(q.get("worker"), 32)
    return Filters(
        status=_choice(q.get("status"), STATUSES),
        type=_choice(q.get("type"), TYPES),
        model=_text(q.get("model")),
        worker=worker if HANDLE_RE.match(worker) else "",
        mine=q.get("mine") in ("1", "on", "true"),
        q=_text(q.get("q")),
        sort=_choice(q.get("sort"), ("priority", "newest", "updated")) or "priority",
    )


def page_of(request: Request) -> tuple[int, int]:
    q = request.query_params
    try:
        page = max(1, min(1_000_000, int(q.get("page", "1"))))
    except ValueError:
        page = 1
    try:
        per_page = int(q.get("per_page", "50"))
    except ValueError:
        per_page = 50
    return page, per_page if per_page in PER_PAGE else 50


def paged(request: Request) -> dict[str, Any]:
    """The board page's selection, shared by the page and /api/items."""
    index = hub_of(request).current
    f = filters_from(request, index)
    rows = index.select(f, hub_of(request).source.handle)
    page, per_page = page_of(request)
    pages = max(1, math.ceil(len(rows) / per_page))
    page = min(page, pages)
    return {"filters": f, "rows": rows[(page - 1) * per_page : page * per_page], "total": len(rows),
            "page": page, "pages": pages, "per_page": per_page, "index": index}


def find_row(request: Request, raw: str) -> Row:
    index = hub_of(request).current
    if not ID_RE.match(raw):
        raise HTTPException(404, f"{raw[:40]!r} is not a wanted item id")
    want = raw if raw.startswith("w-") else "w-" + raw
    row = index.by_id.get(want)
    if row is not None:
        return row
    matches = [r for r in index.rows if r.item.id.startswith(want)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise HTTPException(404, f'"{raw}" matches {len(matches)} items; give more of the id')
    raise HTTPException(404, f'no wanted item matching "{raw}"')


async def board_page(request: Request) -> Response:
    sel = paged(request)
    index = sel["index"]
    return render(request, "board.html", counts=index.counts(), models=index.models, workers=index.workers,
                  statuses=STATUSES, types=TYPES, per_page_choices=PER_PAGE, **sel)


async def item_page(request: Request) -> Response:
    row = find_row(request, request.path_params["item_id"])
    info = await asyncio.to_thread(detail.build, hub_of(request), row)  # may read a blob, recover a signature
    return render(request, "item.html", row=row, d=info, modes=MODES,
                  message=_text(request.query_params.get("msg"), 300))


async def rigs_page(request: Request) -> Response:
    return render(request, "rigs.html", stats=hub_of(request).current.leaderboard())


def rig_info(request: Request) -> dict[str, Any]:
    handle = request.path_params["handle"]
    index = hub_of(request).current
    if not HANDLE_RE.match(handle):
        raise HTTPException(404, f"{handle[:40]!r} is not a rig handle")
    stats = next((s for s in index.leaderboard() if s.handle == handle), None)
    if stats is None:
        raise HTTPException(404, f'no rig "{handle}" on this board')
    worked = [r for r in index.rows if handle in (r.worker, r.item.claimed_by)]
    posted = [r for r in index.rows if r.item.posted_by == handle]
    attested = [(r, b) for r in index.rows for b in r.badges if b.verifier == handle]
    rig = index.state.rigs.get(handle)
    return {"stats": stats, "rig": rig, "worked": worked, "posted": posted, "attested": attested}


async def rig_page(request: Request) -> Response:
    info = rig_info(request)
    return render(request, "rig.html", **info)


def dashboard_data(index: Index) -> dict[str, Any]:
    hourly = index.hourly()
    models = index.per_model()
    return {"hourly": hourly, "models": models}


async def dashboard_page(request: Request) -> Response:
    data = dashboard_data(hub_of(request).current)
    h = data["hourly"]
    s = h["series"]
    jobs = charts.grouped("Inference jobs per hour (UTC)", h["labels"],
                          {"posted": s["posted"], "completed": s["completed"], "verified": s["verified"]})
    outcomes = charts.stacked("Verification outcomes per hour", h["labels"], {v: s[v] for v in VERDICTS},
                              {"VERIFIED": "ok", "MISMATCH": "bad", "INVALID": "warn"})
    tokens = charts.horizontal("Tokens generated per model", [
        (m["model"], m["tokens"], f"{m['tokens']} tokens, {m['completed']} of {m['jobs']} jobs"
         + (f", {m['tokens_per_s']} tok/s" if m["tokens_per_s"] else "")) for m in data["models"]])
    return render(request, "dashboard.html", charts=[jobs, outcomes, tokens], data=data)


async def post_page(request: Request) -> Response:
    hub = hub_of(request)
    if not hub.allow_post:
        raise HTTPException(403, "this server is read-only (start it with --allow-post to post jobs)")
    if request.method == "GET":
        return render(request, "post.html", backends=backend_names(), error="", values={})
    form = await request.form()
    if not csrf_ok(hub, request, form.get("csrf")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong (reload the page)")
    values = {k: str(form.get(k, "")) for k in ("prompt", "model", "backend", "seed", "max_tokens", "chat")}
    try:
        seed = int(values["seed"] or "42")
        max_tokens = int(values["max_tokens"] or "0")
        if values["backend"] not in backend_names():
            raise ValueError(f"unknown backend {values['backend'][:40]!r}")
        item_id = await hub.run_engine(hub.source.post_job, values["prompt"], values["model"].strip(),
                                       values["backend"], seed, max_tokens, bool(values["chat"]))
    except Exception as e:  # noqa: BLE001 - a refused post is shown on the form, never a traceback
        return render(request, "post.html", status_code=400, backends=backend_names(), error=str(e), values=values)
    await hub.sync_now()
    return RedirectResponse(f"/items/{item_id}?msg=posted", status_code=303)


async def verify_action(request: Request) -> Response:
    hub = hub_of(request)
    if not hub.allow_post:
        raise HTTPException(403, "this server is read-only (start it with --allow-post to verify)")
    row = find_row(request, request.path_params["item_id"])
    form = await request.form()
    if not csrf_ok(hub, request, form.get("csrf")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong (reload the page)")
    mode = _choice(str(form.get("mode", "auto")), MODES) or "auto"
    try:
        verdict = await hub.run_engine(hub.source.verify, row.item.id, mode)
    except Exception as e:  # noqa: BLE001 - "could not verify" is a message on the page
        raise HTTPException(409, f"could not verify {row.item.id}: {e}") from None
    await hub.sync_now()
    return RedirectResponse(f"/items/{row.item.id}?msg={verdict['verdict']}#attestations", status_code=303)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return render(request, "error.html", status_code=exc.status_code, message=exc.detail, code=exc.status_code)


def handlers() -> dict[Any, Any]:
    return {HTTPException: http_error}


def routes() -> list[Route]:
    return [
        Route("/", board_page),
        Route("/items/{item_id}", item_page),
        Route("/items/{item_id}/verify", verify_action, methods=["POST"]),
        Route("/rigs", rigs_page),
        Route("/rigs/{handle}", rig_page),
        Route("/dashboard", dashboard_page),
        Route("/post", post_page, methods=["GET", "POST"]),
    ]
