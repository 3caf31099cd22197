"""The billing API (/api/v1/billing): customer, subscription, Checkout and
Customer Portal. Reads come from projections; each action is one `Billing` call;
every route is an `Endpoint` (the caller authenticated and the body parsed before
the handler runs), every answer a model of `api.answers`."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import answers, bodies
from api.contract import USER, Endpoint, reply
from api.errors import STRIPE_FAILURES
from api.request_id import request_id
from ledger import accounts, billing
from ledger.billing import Billing, CustomerNotFound
from ledger.domain.status import is_live
from projections.read_side import ReadSide


def _billing(request: Request) -> Billing:
    return request.state.billing


def _read(request: Request) -> ReadSide:
    return request.state.read


# --- the customer --------------------------------------------------------------------


async def get_customer(request: Request) -> Response:
    """The caller's Stripe customer as the `customers` projection holds it."""
    found = await run_in_threadpool(_read(request).customer, request.state.user_id)
    if found is None:
        raise CustomerNotFound("no Stripe customer for this user yet")
    return reply(answers.CustomerAnswer(**found))


async def update_customer(request: Request) -> Response:
    """Change the customer's email and/or name at Stripe; recorded as
    CustomerDetailsUpdated."""
    body: bodies.CustomerChanges = request.state.body
    details = await run_in_threadpool(
        _billing(request).update_customer,
        request.state.user_id,
        body.email,
        body.name,
        request_id=request_id(request),
    )
    return reply(
        answers.CustomerUpdated(
            customer_id=details.stripe_customer_id,
            email=details.email,
            name=details.name,
            confirmed=False,
        )
    )


# --- the subscription -----------------------------------------------------------------


async def get_billing_subscription(request: Request) -> Response:
    """The caller's current subscription (grace, pending downgrade), or the free tier."""
    found = await run_in_threadpool(_read(request).billing_subscription, request.state.user_id)
    if found.get("id") is None:
        return reply(answers.NoSubscriptionAnswer(tier=found["tier"]))
    return reply(answers.SubscriptionAnswer(**found))


async def create_billing_subscription(request: Request) -> Response:
    """Start a subscription on a plan's price, with the plan's trial unless
    `trial_days` is given; the customer is created first when there is none."""
    body: bodies.NewSubscription = request.state.body
    created, plan, price = await run_in_threadpool(
        _billing(request).create_subscription,
        request.state.user_id,
        body.price_id,
        body.trial_days,
        request_id=request_id(request),
    )
    active = is_live(created.status)
    answer = answers.CreatedSubscriptionAnswer(
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
    return reply(answer, 201)


async def change_plan(request: Request) -> Response:
    """An upgrade now (prorated), or a downgrade at the period end (a schedule)."""
    body: bodies.PlanChange = request.state.body
    change = await run_in_threadpool(
        _billing(request).change_plan,
        request.state.user_id,
        body.price_id,
        request_id=request_id(request),
    )
    return reply(
        answers.PlanChangeAnswer(
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


async def cancel(request: Request) -> Response:
    """Cancel at the period's end (default) or now (`at_period_end=false`)."""
    query: bodies.CancelQuery = request.state.query
    at_period_end = query.at_period_end in ("true", "1")
    canceled = await run_in_threadpool(
        _billing(request).cancel,
        request.state.user_id,
        at_period_end,
        request_id=request_id(request),
    )
    return reply(
        answers.CancelAnswer(
            subscription_id=canceled.stripe_subscription_id,
            status=canceled.status,
            cancel_at_period_end=canceled.cancel_at_period_end,
            cancel_at=canceled.effective_at,
            confirmed=False,
        )
    )


async def resume(request: Request) -> Response:
    """Withdraw a scheduled cancellation and release a pending downgrade."""
    resumed = await run_in_threadpool(
        _billing(request).resume, request.state.user_id, request_id=request_id(request)
    )
    return reply(
        answers.ResumeAnswer(
            subscription_id=resumed.stripe_subscription_id,
            status=resumed.status,
            withdrew_cancellation=resumed.withdrew_cancellation,
            withdrew_pending_change=resumed.withdrew_pending_change,
            confirmed=False,
        )
    )


# --- hosted pages -----------------------------------------------------------------------


async def checkout(request: Request) -> Response:
    """A Stripe Checkout session (mode=subscription) for the caller's customer."""
    body: bodies.CheckoutRequest = request.state.body
    session = await run_in_threadpool(
        _billing(request).checkout,
        request.state.user_id,
        body.price_id,
        body.success_url,
        body.cancel_url,
        request_id=request_id(request),
    )
    return reply(answers.CheckoutAnswer(id=session.stripe_session_id, url=session.url))


async def portal(request: Request) -> Response:
    """A Stripe Customer Portal session for the caller's customer."""
    body: bodies.PortalRequest = request.state.body
    session = await run_in_threadpool(
        _billing(request).portal,
        request.state.user_id,
        body.return_url,
        request_id=request_id(request),
    )
    return reply(answers.PortalAnswer(url=session.url))


ACTION = (accounts.ConcurrentRequest, *STRIPE_FAILURES)  # every action that calls Stripe
B = "/api/v1/billing"

ENDPOINTS = [
    Endpoint(
        "GET", f"{B}/customer", get_customer, "The caller's Stripe customer",
        security=USER, answers={200: answers.CustomerAnswer},
        errors=(CustomerNotFound,), tags=["billing"],
    ),
    Endpoint(
        "PATCH", f"{B}/customer", update_customer, "Change the customer's email or name",
        security=USER, body=bodies.CustomerChanges, answers={200: answers.CustomerUpdated},
        errors=(CustomerNotFound, *ACTION), tags=["billing"],
    ),
    Endpoint(
        "GET", f"{B}/subscription", get_billing_subscription, "The caller's subscription",
        security=USER,
        answers={200: (answers.SubscriptionAnswer, answers.NoSubscriptionAnswer)},
        tags=["billing"],
    ),
    Endpoint(
        "POST", f"{B}/subscription", create_billing_subscription, "Start a subscription",
        security=USER, body=bodies.NewSubscription,
        answers={201: answers.CreatedSubscriptionAnswer},
        errors=(accounts.UnknownPrice, billing.CurrencyMismatch, accounts.SubscriptionExists,
                *ACTION),
        tags=["billing"],
    ),
    Endpoint(
        "PATCH", f"{B}/subscription", change_plan, "Upgrade now or downgrade at the period end",
        security=USER, body=bodies.PlanChange, answers={200: answers.PlanChangeAnswer},
        errors=(accounts.UnknownPrice, accounts.NoSubscription, billing.CurrencyMismatch,
                *ACTION),
        tags=["billing"],
    ),
    Endpoint(
        "DELETE", f"{B}/subscription", cancel, "Cancel the subscription",
        security=USER, query=bodies.CancelQuery, answers={200: answers.CancelAnswer},
        errors=(accounts.NoSubscription, *ACTION), tags=["billing"],
    ),
    Endpoint(
        "POST", f"{B}/subscription/resume", resume,
        "Withdraw a scheduled cancellation or downgrade", security=USER,
        answers={200: answers.ResumeAnswer}, errors=(billing.NothingToResume, *ACTION),
        tags=["billing"],
    ),
    Endpoint(
        "POST", f"{B}/checkout", checkout, "Open a Stripe Checkout session",
        security=USER, body=bodies.CheckoutRequest, answers={200: answers.CheckoutAnswer},
        errors=(billing.InvalidRedirect, accounts.UnknownPrice, billing.CurrencyMismatch,
                accounts.SubscriptionExists, *ACTION),
        tags=["billing"],
    ),
    Endpoint(
        "POST", f"{B}/portal", portal, "Open a Stripe Customer Portal session",
        security=USER, body=bodies.PortalRequest, answers={200: answers.PortalAnswer},
        errors=(billing.InvalidRedirect, CustomerNotFound, *ACTION), tags=["billing"],
    ),
]  # fmt: skip
