"""The billing API (/api/v1/billing): customer, subscription, Checkout and
Customer Portal. Reads come from projections; each action is one `Billing` call;
every answer is a pydantic model below."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import bodies
from api.auth import caller
from api.errors import BadRequest
from ledger.billing import Billing, CustomerNotFound
from ledger.domain.status import is_live
from projections.read_side import ReadSide


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class CustomerAnswer(_Answer):
    customer_id: str
    email: str | None
    name: str | None


class CustomerUpdated(CustomerAnswer):
    confirmed: bool  # False until customer.updated has been applied


class PendingChange(_Answer):
    price_id: str
    plan_id: str | None
    effective_at: int | None


class SubscriptionAnswer(_Answer):
    id: str
    status: str
    active: bool
    tier: str
    plan_id: str | None
    plan_name: str | None = None
    price_id: str | None
    interval: str | None
    amount: int | None
    currency: str | None
    current_period_start: int | None
    current_period_end: int | None
    cancel_at_period_end: bool
    cancel_at: int | None
    trial_end: int | None
    in_grace_until: int | None
    pending_change: PendingChange | None


class NoSubscriptionAnswer(_Answer):
    active: Literal[False] = False
    id: None = None
    tier: str


class CreatedSubscriptionAnswer(SubscriptionAnswer):
    client_secret: str | None
    confirmed: bool


class PlanChangeAnswer(_Answer):
    change: Literal["upgrade", "downgrade", "same"]
    effective: Literal["now", "period_end"]
    subscription_id: str
    price_id: str
    plan_id: str
    effective_at: int | None
    proration_behavior: str | None
    status: str
    confirmed: bool


class CancelAnswer(_Answer):
    subscription_id: str
    status: str
    cancel_at_period_end: bool
    cancel_at: int | None
    confirmed: bool


class ResumeAnswer(_Answer):
    subscription_id: str
    status: str
    withdrew_cancellation: bool
    withdrew_pending_change: bool
    confirmed: bool


class CheckoutAnswer(_Answer):
    id: str
    url: str


class PortalAnswer(_Answer):
    url: str


def _billing(request: Request) -> Billing:
    return request.state.billing


def _read(request: Request) -> ReadSide:
    return request.state.read


def _answer(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


# --- the customer --------------------------------------------------------------------


async def get_customer(request: Request) -> JSONResponse:
    user_id = await caller(request)
    found = await run_in_threadpool(_read(request).customer, user_id)
    if found is None:
        raise CustomerNotFound("no Stripe customer for this user yet")
    return _answer(CustomerAnswer(**found))


async def update_customer(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.CustomerChanges)
    details = await run_in_threadpool(
        _billing(request).update_customer, user_id, body.email, body.name
    )
    return _answer(
        CustomerUpdated(
            customer_id=details.stripe_customer_id,
            email=details.email,
            name=details.name,
            confirmed=False,
        )
    )


# --- the subscription -----------------------------------------------------------------


async def get_subscription(request: Request) -> JSONResponse:
    user_id = await caller(request)
    found = await run_in_threadpool(_read(request).billing_subscription, user_id)
    if found.get("id") is None:
        return _answer(NoSubscriptionAnswer(tier=found["tier"]))
    return _answer(SubscriptionAnswer(**found))


async def create_subscription(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.NewSubscription)
    created, plan, price = await run_in_threadpool(
        _billing(request).create_subscription, user_id, body.price_id, body.trial_days
    )
    active = is_live(created.status)
    answer = CreatedSubscriptionAnswer(
        id=created.stripe_subscription_id,
        status=created.status,
        active=active,
        tier=plan.tier if active else _read(request).catalog.free_tier,
        plan_id=plan.id,
        plan_name=price.name,
        price_id=price.id,
        interval=price.interval,
        amount=price.amount,
        currency=price.currency,
        current_period_start=created.current_period_start,
        current_period_end=created.current_period_end,
        cancel_at_period_end=False,
        cancel_at=None,
        trial_end=created.trial_end,
        in_grace_until=None,
        pending_change=None,
        client_secret=created.client_secret,
        confirmed=False,
    )
    return _answer(answer, 201)


async def change_plan(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.PlanChange)
    change = await run_in_threadpool(_billing(request).change_plan, user_id, body.price_id)
    return _answer(
        PlanChangeAnswer(
            change=change.change,  # type: ignore[arg-type]
            effective=change.effective,  # type: ignore[arg-type]
            subscription_id=change.stripe_subscription_id,
            price_id=change.price_id,
            plan_id=change.plan_id,
            effective_at=change.effective_at,
            proration_behavior=change.proration_behavior,
            status=change.status,
            confirmed=change.change == "same",
        )
    )


async def cancel(request: Request) -> JSONResponse:
    user_id = await caller(request)
    raw = request.query_params.get("at_period_end", "true").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest("at_period_end: must be true or false")
    at_period_end = raw in ("true", "1")
    canceled = await run_in_threadpool(_billing(request).cancel, user_id, at_period_end)
    return _answer(
        CancelAnswer(
            subscription_id=canceled.stripe_subscription_id,
            status=canceled.status,
            cancel_at_period_end=canceled.cancel_at_period_end,
            cancel_at=canceled.effective_at,
            confirmed=False,
        )
    )


async def resume(request: Request) -> JSONResponse:
    user_id = await caller(request)
    resumed = await run_in_threadpool(_billing(request).resume, user_id)
    return _answer(
        ResumeAnswer(
            subscription_id=resumed.stripe_subscription_id,
            status=resumed.status,
            withdrew_cancellation=resumed.withdrew_cancellation,
            withdrew_pending_change=resumed.withdrew_pending_change,
            confirmed=False,
        )
    )


# --- hosted pages -----------------------------------------------------------------------


async def checkout(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.CheckoutRequest)
    session = await run_in_threadpool(
        _billing(request).checkout, user_id, body.price_id, body.success_url, body.cancel_url
    )
    return _answer(CheckoutAnswer(id=session.stripe_session_id, url=session.url))


async def portal(request: Request) -> JSONResponse:
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.PortalRequest)
    session = await run_in_threadpool(_billing(request).portal, user_id, body.return_url)
    return _answer(PortalAnswer(url=session.url))
