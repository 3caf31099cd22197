"""The browser extension's API: POST /api/users (and its token's rotation) and the
five /api/stripe endpoints, answering exactly as the extension's backend spec
gives them."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import answers, bodies
from api.contract import USER, Endpoint, reply
from api.errors import STRIPE_FAILURES, BadRequest
from api.ratelimit import Limits, client_address
from api.request_id import request_id
from ledger import accounts
from ledger.accounts import Accounts
from ledger.domain.status import extension_word
from projections.read_side import ReadSide


def _accounts(request: Request) -> Accounts:
    return request.state.accounts


def _read(request: Request) -> ReadSide:
    return request.state.read


async def register(request: Request) -> Response:
    """Register the extension's own user id once; the answer holds its token."""
    limits: Limits = request.state.limits
    limits.registering(client_address(request.scope))
    body: bodies.Registration = request.state.body
    token = await run_in_threadpool(
        _accounts(request).register, body.user_id, request_id=request_id(request)
    )
    return reply(answers.Registered(user_id=body.user_id, token=token), 201)


async def rotate_token(request: Request) -> Response:
    """A new token for the caller; the one this request carried is refused from now
    on, on every API process."""
    user_id: str = request.state.user_id
    token = await run_in_threadpool(
        _accounts(request).rotate_token, user_id, request_id=request_id(request)
    )
    return reply(answers.TokenRotated(user_id=user_id, token=token), 201)


async def create_subscription(request: Request) -> Response:
    body: bodies.CreateSubscription = request.state.body
    created = await run_in_threadpool(
        _accounts(request).create_subscription,
        request.state.user_id,
        body.user_id,
        body.price_id,
        body.billing_cycle,
        body.return_url,
        request_id=request_id(request),
    )
    return reply(
        answers.SubscriptionCreated(
            subscription_id=created.stripe_subscription_id,
            client_secret=created.client_secret,
            status=extension_word(created.status),  # type: ignore[arg-type]
            current_period_start=created.current_period_start,
            current_period_end=created.current_period_end,
        )
    )


async def get_subscription(request: Request) -> Response:
    """The hot path: no thread-pool hop for a known user (see ReadSide.status_async)."""
    status = await _read(request).status_async(request.state.user_id)
    if "id" not in status:
        return reply(answers.NoSubscription(active=False))
    return reply(
        answers.ActiveSubscription.model_validate(
            {f: status[f] for f in answers.ActiveSubscription.model_fields}
        )
    )


async def verify_subscription(request: Request) -> Response:
    status = await _read(request).status_async(request.state.user_id)
    return reply(
        answers.Verification(
            valid=status["active"],
            subscription_id=status.get("id"),
            status=status.get("status"),
        )
    )


async def cancel_subscription(request: Request) -> Response:
    body: bodies.Cancel = request.state.body
    canceled = await run_in_threadpool(
        _accounts(request).cancel,
        request.state.user_id,
        body.immediate,
        request_id=request_id(request),
    )
    return reply(
        answers.Canceled(
            canceled=True,
            subscription_id=canceled.stripe_subscription_id,
            cancellation_date=_iso(canceled.effective_at),
        )
    )


async def update_payment_method(request: Request) -> Response:
    body: bodies.UpdatePaymentMethod = request.state.body
    subscription_id = await run_in_threadpool(
        _accounts(request).update_payment_method,
        request.state.user_id,
        body.payment_method_id,
        request_id=request_id(request),
    )
    return reply(answers.PaymentMethodUpdated(updated=True, subscription_id=subscription_id))


def _iso(unix: int | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ENDPOINTS = [
    Endpoint(
        "POST", "/api/users", register, "Register a user",
        body=bodies.Registration, answers={201: answers.Registered},
        errors=(accounts.InvalidUserId, accounts.UserAlreadyRegistered, BadRequest),
        tags=["extension"], private=True,
    ),
    Endpoint(
        "POST", "/api/users/token", rotate_token, "Rotate the caller's token",
        security=USER, answers={201: answers.TokenRotated},
        errors=(accounts.ConcurrentRequest,), tags=["extension"],
    ),
    Endpoint(
        "POST", "/api/stripe/create-subscription", create_subscription,
        "Start a subscription", security=USER, body=bodies.CreateSubscription,
        answers={200: answers.SubscriptionCreated},
        errors=(accounts.Forbidden, accounts.UnknownPrice, accounts.BillingCycleMismatch,
                accounts.SubscriptionExists, accounts.ConcurrentRequest, *STRIPE_FAILURES),
        tags=["extension"],
    ),
    Endpoint(
        "GET", "/api/stripe/get-subscription", get_subscription,
        "The caller's subscription", security=USER,
        answers={200: (answers.ActiveSubscription, answers.NoSubscription)},
        tags=["extension"],
    ),
    Endpoint(
        "POST", "/api/stripe/verify-subscription", verify_subscription,
        "Whether the caller's subscription grants the plan", security=USER,
        answers={200: answers.Verification}, tags=["extension"],
    ),
    Endpoint(
        "POST", "/api/stripe/cancel-subscription", cancel_subscription,
        "Cancel the caller's subscription (now, or at the period's end)", security=USER,
        body=bodies.Cancel, body_required=False, answers={200: answers.Canceled},
        errors=(accounts.NoSubscription, accounts.ConcurrentRequest, *STRIPE_FAILURES),
        tags=["extension"],
    ),
    Endpoint(
        "POST", "/api/stripe/update-payment-method", update_payment_method,
        "Make a payment method the subscription's default", security=USER,
        body=bodies.UpdatePaymentMethod, answers={200: answers.PaymentMethodUpdated},
        errors=(accounts.NoSubscription, accounts.ConcurrentRequest, *STRIPE_FAILURES),
        tags=["extension"],
    ),
]  # fmt: skip
