"""POST /webhooks/stripe: verify, record the receipt, answer. Nothing more."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ERRORS, PayloadTooLarge
from api.metrics import WEBHOOKS
from ledger.application import Delivery
from ledger.config import Settings
from ledger.intake import GroupCommitter, StoreUnavailable, delivery_of
from ledger.stripe.payloads import read_envelope
from ledger.stripe.signature import verify_signature

REFUSALS = tuple(ERRORS)  # counted by their error code


async def stripe_webhook(request: Request) -> JSONResponse:
    settings: Settings = request.state.settings
    try:
        body = await _body(request, settings.webhook_max_body_bytes)
        verify_signature(
            body,
            request.headers.get("stripe-signature"),
            settings.webhook_secrets,
            settings.webhook_tolerance_seconds,
        )
        delivery = delivery_of(read_envelope(body), body)
        recorded = await _committed(request.state.committer, delivery, settings)
    except REFUSALS as exc:
        WEBHOOKS.labels(ERRORS[type(exc)][1]).inc()
        raise
    WEBHOOKS.labels("recorded" if recorded else "duplicate").inc()
    return JSONResponse({"received": True, "duplicate": not recorded})


async def _committed(committer: GroupCommitter, delivery: Delivery, settings: Settings) -> bool:
    pending = asyncio.wrap_future(committer.submit(delivery))
    try:
        return await asyncio.wait_for(
            asyncio.shield(pending), settings.webhook_write_timeout_seconds
        )
    except TimeoutError:
        raise StoreUnavailable("the log did not answer in time") from None


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
