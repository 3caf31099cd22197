"""POST /webhooks/stripe: read the body (up to a limit), hand it to stage one,
count the result, answer. Nothing more.

The route is declared, mounted and documented as every other (`ENDPOINTS`), and
`WebhookShortcut`, the first middleware, serves the very same method and path
straight away: Stripe's deliveries are the one hot write, and CORS, rate limits
and routing, which do not apply to them, cost more CPU per delivery than
recording it. Both ways run `_deliver` (one body reader, one answer, refusals
from the one error table, the same metrics); anything unexpected goes on to the
app's 500 handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import answers
from api.contract import STRIPE, Endpoint
from api.errors import REFUSALS, PayloadTooLarge, describe, error
from api.metrics import WEBHOOKS
from ledger.intake import Intake, StoreUnavailable
from ledger.stripe import NotAnEvent
from ledger.stripe.signature import InvalidSignature

PATH = "/webhooks/stripe"
_JSON = (b"content-type", b"application/json")
# the answers, rendered once from their declared model (so they match the document)
_ANSWERS = {
    recorded: answers.Delivery(received=True, duplicate=not recorded).model_dump_json().encode()
    for recorded in (True, False)
}

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


async def stripe_webhook(request: Request) -> Response:
    """Record a signed Stripe delivery (once per event id), then answer."""
    answer = await _deliver(request.scope["state"], request.scope["headers"], request.receive)
    if answer is None:
        raise ClientDisconnect  # nobody to answer; nothing was recorded
    status, body, headers = answer
    return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})


async def _deliver(
    state: Mapping[str, Any], raw_headers: list[tuple[bytes, bytes]], receive: Receive
) -> Answer | None:
    """The endpoint itself, on ASGI's terms: the answer (status, body, headers),
    or None when the client went away before its body was read."""
    intake: Intake = state["intake"]
    headers = dict(raw_headers)
    try:
        body = await _body(receive, headers, state["settings"].webhook_max_body_bytes)
        signature = headers.get(b"stripe-signature")
        recorded = await intake.receive(body, signature.decode("latin-1") if signature else None)
    except REFUSALS as exc:
        status, code, message = describe(exc)
        WEBHOOKS.labels(code).inc()  # counted by its error code
        extra = [(b"retry-after", b"5")] if status == 503 else []  # as `domain_error` does
        return status, bytes(error(status, code, message).body), [_JSON, *extra]
    except _ClientGone:
        return None
    WEBHOOKS.labels("recorded" if recorded else "duplicate").inc()
    return 200, _ANSWERS[recorded], [_JSON]


class _ClientGone(Exception):
    pass


class WebhookShortcut:
    """Pure ASGI middleware: the declared webhook route (`ENDPOINTS`: its method
    and path) is served here directly, everything else goes on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.serves = {(e.method, e.path) for e in ENDPOINTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.serves:
            answer = await _deliver(scope["state"], scope["headers"], receive)
            if answer is not None:
                await _send(send, *answer)
        else:
            await self.app(scope, receive, send)


async def _body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk: no copy


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


ENDPOINTS = [
    Endpoint(
        "POST", PATH, stripe_webhook, "Receive a Stripe webhook delivery",
        security=STRIPE, answers={200: answers.Delivery},
        errors=(InvalidSignature, NotAnEvent, PayloadTooLarge, StoreUnavailable),
        tags=["webhooks"],
    ),
]  # fmt: skip
