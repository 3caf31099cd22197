"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.requests import Request
from starlette.responses import Response

WEBHOOKS = Counter(
    "ledger_webhook_deliveries",
    "Stripe deliveries received, by result",
    ["result"],  # recorded, duplicate, invalid_signature, not_an_event, too_large, unavailable
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
