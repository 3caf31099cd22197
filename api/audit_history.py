"""The auditors' history (admin token): the log's events, one Stripe delivery
byte for byte, a user's API actions."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.audit import _authorize
from api.errors import BadRequest
from projections.history import History, delivered


def _history(request: Request) -> History:
    read = _authorize(request)
    return History(request.state.ledger, read.owners)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def events(request: Request) -> JSONResponse:
    history = _history(request)
    after = _int(request, "after", 0, 0, 2**62)
    limit = _int(request, "limit", 100, 1, 1000)
    user_id = request.query_params.get("user_id") or None
    page = await run_in_threadpool(history.page, user_id, after, limit)
    return JSONResponse(page.model_dump(mode="json"))


async def delivery(request: Request) -> Response:
    _authorize(request)
    found = await run_in_threadpool(
        delivered, request.state.ledger, request.path_params["stripe_event_id"]
    )
    return Response(found.body, media_type="application/json", headers=found.headers())


async def actions(request: Request) -> JSONResponse:
    history = _history(request)
    page = await run_in_threadpool(history.actions, request.path_params["user_id"])
    return JSONResponse(page.model_dump(mode="json"))


async def erase(request: Request) -> JSONResponse:
    history = _history(request)
    erased = await run_in_threadpool(history.erase, request.path_params["user_id"])
    return JSONResponse(erased.model_dump(mode="json"))


async def seal(request: Request) -> JSONResponse:
    read = _authorize(request)
    head = await run_in_threadpool(read.seal.head)
    return JSONResponse(head.model_dump(mode="json"))
