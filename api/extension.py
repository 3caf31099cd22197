"""The browser extension's API: POST /api/users and the five /api/stripe endpoints,
answering exactly as the extension's backend spec gives them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import bodies
from api.auth import caller
from ledger.accounts import Accounts
from ledger.domain.status import extension_word
from projections.read_side import ReadSide
from projections.subscription_status import FIELDS

STATUS_FIELDS = ("active", "id", *FIELDS)  # the extension's get-subscription answer


def _accounts(request: Request) -> Accounts:
    return request.state.accounts


def _read(request: Request) -> ReadSide:
    return request.state.read


async def register(request: Request) -> JSONResponse:
    body = await bodies.parse(request, bodies.Registration)
    token = await run_in_threadpool(_accounts(request).register, body.user_id)
    return JSONResponse({"user_id": body.user_id, "token": token}, status_code=201)


async def create_subscription(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.CreateSubscription)
    created = await run_in_threadpool(
        _accounts(request).create_subscription,
        user_id,
        body.user_id,
        body.price_id,
        body.billing_cycle,
        body.return_url,
    )
    return JSONResponse(
        {
            "subscription_id": created.stripe_subscription_id,
            "client_secret": created.client_secret,
            "status": extension_word(created.status),
            "current_period_start": created.current_period_start,
            "current_period_end": created.current_period_end,
        }
    )


async def _callers_status(request: Request) -> dict[str, Any]:
    """The hot path: no thread-pool hop for a known user (see ReadSide.status_async)."""
    return await _read(request).status_async(await caller(request))


async def get_subscription(request: Request) -> JSONResponse:
    status = await _callers_status(request)
    if "id" not in status:
        return JSONResponse({"active": False})
    return JSONResponse({field: status[field] for field in STATUS_FIELDS})


async def verify_subscription(request: Request) -> JSONResponse:
    status = await _callers_status(request)
    return JSONResponse(
        {
            "valid": status["active"],
            "subscription_id": status.get("id"),
            "status": status.get("status"),
        }
    )


async def cancel_subscription(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.Cancel, empty_ok=True)
    canceled = await run_in_threadpool(_accounts(request).cancel, user_id, body.immediate)
    return JSONResponse(
        {
            "canceled": True,
            "subscription_id": canceled.stripe_subscription_id,
            "cancellation_date": _iso(canceled.effective_at),
        }
    )


async def update_payment_method(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.UpdatePaymentMethod)
    subscription_id = await run_in_threadpool(
        _accounts(request).update_payment_method, user_id, body.payment_method_id
    )
    return JSONResponse({"updated": True, "subscription_id": subscription_id})


def _iso(unix: int | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
