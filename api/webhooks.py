"""POST /webhooks/stripe: read the body (up to a limit), hand it to stage one,
count the result, answer. Nothing more.

It is a plain ASGI endpoint, and `WebhookShortcut` (the first middleware) sends
the route's requests straight to it: Stripe's deliveries are the one hot write,
and CORS, rate limits and routing, which do not apply to them, cost more CPU per
delivery than recording it. Refusals are answered from the one error table;
anything unexpected goes on to the app's 500 handler."""

from __future__ import annotations

import json
from typing import Any

from api.errors import REFUSALS, PayloadTooLarge, describe
from api.metrics import WEBHOOKS
from ledger.intake import Intake

PATH = "/webhooks/stripe"
_ANSWERS = {
    recorded: json.dumps({"received": True, "duplicate": not recorded}, separators=(",", ":"))
    for recorded in (True, False)
}

Scope = dict[str, Any]
Receive = Any
Send = Any


class StripeWebhook:
    """The endpoint, as an ASGI app (a `Route` hands it the request as is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        intake: Intake = state["intake"]
        headers = dict(scope["headers"])
        try:
            body = await _body(receive, headers, state["settings"].webhook_max_body_bytes)
            signature = headers.get(b"stripe-signature")
            recorded = await intake.receive(
                body, signature.decode("latin-1") if signature else None
            )
        except REFUSALS as exc:
            status, code, message = describe(exc)
            WEBHOOKS.labels(code).inc()  # counted by its error code
            extra = [(b"retry-after", b"5")] if status == 503 else []
            await _answer(send, status, json.dumps({"error": message, "error_code": code}), extra)
            return
        except _ClientGone:
            return  # nobody to answer; nothing was recorded
        WEBHOOKS.labels("recorded" if recorded else "duplicate").inc()
        await _answer(send, 200, _ANSWERS[recorded])


stripe_webhook = StripeWebhook()


class _ClientGone(Exception):
    pass


class WebhookShortcut:
    """Pure ASGI middleware: POST /webhooks/stripe goes to the endpoint directly,
    everything else on to the app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await stripe_webhook(scope, receive, send)
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


async def _answer(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
