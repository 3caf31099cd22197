"""Auditors' and operators' calls (admin token, checked by the route's contract):
a user's billing as the projections hold it, or as the ledger knew it at a moment
(`?as_of=`); webhook health; projection positions; revoking a user's tokens."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import answers, bodies
from api.contract import ADMIN, Endpoint, reply
from api.errors import BadRequest
from api.request_id import request_id
from ledger import accounts
from projections.as_of import parse_instant, replay_user
from projections.read_side import ReadSide


async def user(request: Request) -> Response:
    """A user's billing now (from the projections), or as of `as_of` (replayed)."""
    read: ReadSide = request.state.read
    user_id = request.path_params["user_id"]
    query: bodies.AuditQuery = request.state.query
    if query.as_of is not None:
        try:
            moment = parse_instant(query.as_of)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        ledger = request.state.ledger
        replayed = await run_in_threadpool(
            replay_user, ledger, read.catalog, user_id, moment, read.owners
        )
        return reply(answers.UserBillingAsOf.model_validate(replayed))

    def gather() -> answers.UserBilling:
        return answers.UserBilling(
            user_id=user_id,
            subscription=read.status(user_id),
            entitlements=read.entitlements(user_id),
            invoices=read.invoices(user_id),
            notifications=read.notifications(user_id),
        )

    return reply(await run_in_threadpool(gather))


async def webhooks(request: Request) -> Response:
    """Webhook deliveries by type and outcome, the last one's time, the dead ones."""
    read: ReadSide = request.state.read
    return reply(answers.WebhookHealth.model_validate(await run_in_threadpool(read.webhook_health)))


async def projections(request: Request) -> Response:
    """Each projection's generation, position, the log's head and the lag."""
    read: ReadSide = request.state.read
    positions = await run_in_threadpool(read.positions)
    return JSONResponse(answers.ProjectionPositions.model_validate(positions).model_dump())


async def revoke_tokens(request: Request) -> Response:
    """Revoke every token of a user: refused from now on, on every API process."""
    user_id = request.path_params["user_id"]
    await run_in_threadpool(
        request.state.accounts.revoke_tokens, user_id, request_id=request_id(request)
    )
    return reply(answers.TokensRevoked(user_id=user_id, revoked=True))


ENDPOINTS = [
    Endpoint(
        "GET", "/api/v1/audit/users/{user_id}", user, "A user's billing, now or as of a time",
        security=ADMIN, query=bodies.AuditQuery, path_params=bodies.UserPath,
        answers={200: (answers.UserBilling, answers.UserBillingAsOf)}, tags=["audit"],
        private=True,
    ),
    Endpoint(
        "GET", "/api/v1/audit/webhooks", webhooks, "Webhook health", security=ADMIN,
        answers={200: answers.WebhookHealth}, tags=["audit"], private=True,
    ),
    Endpoint(
        "GET", "/api/v1/audit/projections", projections, "Projection positions",
        security=ADMIN, answers={200: answers.ProjectionPositions}, tags=["audit"],
        private=True,
    ),
    Endpoint(
        "DELETE", "/api/v1/audit/users/{user_id}/tokens", revoke_tokens,
        "Revoke all of a user's tokens", security=ADMIN, path_params=bodies.UserPath,
        answers={200: answers.TokensRevoked},
        errors=(accounts.UnknownUser, accounts.ConcurrentRequest), tags=["audit"],
    ),
]  # fmt: skip
