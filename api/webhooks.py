"""POST /webhooks/stripe: read the body (up to a limit), hand it to stage one,
count the result, answer. Nothing more."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api import answers
from api.contract import STRIPE, Endpoint, reply
from api.errors import REFUSALS, PayloadTooLarge, describe
from api.metrics import WEBHOOKS
from ledger.intake import Intake, StoreUnavailable
from ledger.stripe import NotAnEvent
from ledger.stripe.signature import InvalidSignature


async def stripe_webhook(request: Request) -> Response:
    """Record a signed Stripe delivery (once per event id), then answer."""
    intake: Intake = request.state.intake
    try:
        body = await _body(request, request.state.settings.webhook_max_body_bytes)
        recorded = await intake.receive(body, request.headers.get("stripe-signature"))
    except REFUSALS as exc:
        WEBHOOKS.labels(describe(exc)[1]).inc()  # counted by its error code
        raise
    WEBHOOKS.labels("recorded" if recorded else "duplicate").inc()
    return reply(answers.Delivery(received=True, duplicate=not recorded))


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
    return b"".join(chunks)  # one chunk, the usual case: no copy


ENDPOINTS = [
    Endpoint(
        "POST", "/webhooks/stripe", stripe_webhook, "Receive a Stripe webhook delivery",
        security=STRIPE, answers={200: answers.Delivery},
        errors=(InvalidSignature, NotAnEvent, PayloadTooLarge, StoreUnavailable),
        tags=["webhooks"],
    ),
]  # fmt: skip
