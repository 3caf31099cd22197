"""Auditors' and operators' reads (admin token): a user's billing as the
projections hold it, or as the ledger knew it at a moment (`?as_of=`)."""

from __future__ import annotations

import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import BadRequest, Unauthorized
from projections.as_of import parse_instant, replay_user
from projections.read_side import ReadSide


def _authorize(request: Request) -> ReadSide:
    token = request.state.settings.admin_token.get_secret_value()
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("an admin token is required: Authorization: Bearer <token>")
    return request.state.read


async def user(request: Request) -> JSONResponse:
    read = _authorize(request)
    user_id = request.path_params["user_id"]
    as_of = request.query_params.get("as_of")
    if as_of is not None:
        try:
            moment = parse_instant(as_of)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        ledger = request.state.ledger
        return JSONResponse(
            await run_in_threadpool(replay_user, ledger, read.catalog, user_id, moment, read.owners)
        )

    def gather() -> dict[str, object]:
        return {
            "user_id": user_id,
            "subscription": read.status(user_id),
            "entitlements": read.entitlements(user_id),
            "invoices": read.invoices(user_id),
            "notifications": read.notifications(user_id),
        }

    return JSONResponse(await run_in_threadpool(gather))


async def webhooks(request: Request) -> JSONResponse:
    read = _authorize(request)
    return JSONResponse(await run_in_threadpool(read.webhook_health))


async def projections(request: Request) -> JSONResponse:
    read = _authorize(request)
    return JSONResponse(await run_in_threadpool(read.positions))
