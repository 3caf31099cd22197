"""One map from domain errors to HTTP answers, all shaped {"error", "error_code"}."""

from __future__ import annotations

import logging

from eventsourcing.persistence import PersistenceError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.request_id import HEADER, request_id
from ledger import accounts, billing, usage
from ledger.application import ReceiptNotFound
from ledger.domain.gate import UnknownFeature
from ledger.intake import StoreUnavailable
from ledger.personal import Erased
from ledger.stripe import NotAnEvent
from ledger.stripe.gateway import StripeRejected, StripeUnavailable
from ledger.stripe.signature import InvalidSignature
from projections.invoice_history import UnknownInvoice

log = logging.getLogger("api")


class PayloadTooLarge(ValueError):
    pass


class Unauthorized(PermissionError):
    pass


class BadRequest(ValueError):
    pass


class RateLimited(Exception):
    """Over a rate limit; `retry_after` seconds until the window lets it through."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "error_code": code}, status, headers=headers)


# exception class -> (status, error_code, message; None means the exception's own text)
ERRORS: dict[type[Exception], tuple[int, str, str | None]] = {
    InvalidSignature: (400, "invalid_signature", None),
    NotAnEvent: (400, "not_an_event", None),
    PayloadTooLarge: (413, "payload_too_large", None),
    BadRequest: (400, "bad_request", None),
    Unauthorized: (401, "unauthorized", None),
    StoreUnavailable: (503, "store_unavailable", "the ledger cannot record this now; retry later"),
    PersistenceError: (503, "store_unavailable", "the ledger's store does not answer; retry later"),
    accounts.InvalidUserId: (400, "invalid_user_id", None),
    accounts.UnknownPrice: (400, "invalid_price", None),
    accounts.BillingCycleMismatch: (400, "invalid_billing_cycle", None),
    accounts.NotAuthenticated: (401, "unauthorized", None),
    accounts.Forbidden: (403, "forbidden", None),
    accounts.NoSubscription: (404, "subscription_not_found", None),
    accounts.UserAlreadyRegistered: (409, "user_exists", None),
    accounts.SubscriptionExists: (409, "subscription_exists", None),
    accounts.ConcurrentRequest: (409, "conflict", None),
    accounts.StripeNotConfigured: (503, "stripe_not_configured", None),
    StripeRejected: (400, "stripe_rejected", None),
    ReceiptNotFound: (404, "delivery_not_found", "no delivery with that Stripe event id"),
    Erased: (410, "erased", "this delivery's personal data was erased"),
    usage.InvalidUsage: (400, "bad_request", None),
    StripeUnavailable: (
        502,
        "stripe_unavailable",
        "Stripe did not answer; retrying the same request is safe",
    ),
    UnknownFeature: (400, "unknown_feature", "no plan has a feature of that name"),
    UnknownInvoice: (400, "invalid_starting_after", "no invoice of yours has that id"),
    billing.CustomerNotFound: (404, "customer_not_found", None),
    billing.NothingToResume: (409, "nothing_to_resume", None),
    billing.InvalidRedirect: (400, "invalid_redirect", None),
    billing.CurrencyMismatch: (400, "currency_mismatch", None),
    RateLimited: (429, "rate_limited", None),
    accounts.UnknownUser: (404, "user_not_found", None),
}


REFUSALS = tuple(ERRORS)


def describe(exc: Exception) -> tuple[int, str, str]:
    """The answer to a refusal (an instance of a class in ERRORS, or of a subclass
    of one: the nearest in its class hierarchy wins): status, error code, message."""
    status, code, message = next(ERRORS[c] for c in type(exc).__mro__ if c in ERRORS)
    if isinstance(exc, StripeRejected):  # Stripe's own code says more (card_declined, ...)
        code = exc.code or code
    return status, code, message or str(exc)


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, code, message = describe(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return error(status, code, message, headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    """Sent by Starlette's outermost middleware, around `RequestId`: the request id
    is added here (and logged)."""
    rid = request_id(request)
    log.error(
        "unhandled %s on %s %s (request %s)",
        type(exc).__name__,
        request.method,
        request.url.path,
        rid,
        exc_info=exc,
    )
    return error(500, "internal_error", "internal error", {HEADER: rid} if rid else None)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in our shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(exc.status_code, code, str(exc.detail), exc.headers)


def exception_handlers() -> dict[type[Exception] | int, object]:
    handlers: dict[type[Exception] | int, object] = dict.fromkeys(ERRORS, domain_error)
    handlers[HTTPException] = http_error
    handlers[Exception] = server_error
    return handlers


# What every route that calls Stripe can answer besides its own refusals.
STRIPE_FAILURES = (StripeRejected, StripeUnavailable, accounts.StripeNotConfigured)
