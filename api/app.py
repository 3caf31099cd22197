"""Assembles the ASGI app. Shared objects are built in the lifespan, not at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from eventsourcing.persistence import PersistenceError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import answers, audit, audit_history, billing, billing_reads, extension, usage, webhooks
from api.bootstrap import Parts
from api.contract import Endpoint, Routes, openapi, reply, routes
from api.cors import Cors
from api.errors import exception_handlers
from api.metrics import metrics
from api.ratelimit import Limits, RateLimit
from api.request_id import HEADER, RequestId
from api.webhooks import WebhookShortcut
from ledger import collector
from ledger.config import Settings
from ledger.intake import StoreUnavailable
from ledger.stripe import signature


async def healthz(request: Request) -> Response:
    """The process is up."""
    return reply(answers.Health(status="ok"))


async def readyz(request: Request) -> Response:
    """The log and the projections answer: send traffic here."""
    try:
        positions = await asyncio.wait_for(run_in_threadpool(request.state.read.positions), 2)
    except (PersistenceError, TimeoutError):
        raise StoreUnavailable("the store does not answer") from None
    return reply(answers.Ready(status="ready", lag=max(p["lag"] for p in positions)))


async def openapi_json(request: Request) -> Response:
    """This document: every route, its bodies, answers, refusals and security."""
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = openapi(request.app.routes)
    return JSONResponse(document)


OPERATIONS = [
    Endpoint("GET", "/healthz", healthz, "Liveness", answers={200: answers.Health},
             tags=["operations"]),
    Endpoint("GET", "/readyz", readyz, "Readiness", answers={200: answers.Ready},
             errors=(StoreUnavailable,), tags=["operations"]),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", answers={200: "text/plain"},
             tags=["operations"]),
    Endpoint("GET", "/openapi.json", openapi_json, "This OpenAPI document",
             answers={200: answers.OpenApiDocument}, tags=["operations"]),
]  # fmt: skip


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        collector.tune()  # in every worker: each is a process of its own
        signature.prepare()
        parts = Parts(settings)
        try:
            parts.start()
            await parts.read.open_async()
            try:
                yield {
                    "settings": parts.settings,
                    "ledger": parts.ledger,
                    "intake": parts.intake,
                    "read": parts.read,
                    "accounts": parts.accounts,
                    "billing": parts.billing,
                    "metering": parts.metering,
                    "limits": limits,
                }
            finally:
                await parts.read.close_async()
                await parts.close_async()
        finally:
            parts.close()

    config = settings or Settings()  # reads the environment only; secrets come in lifespan
    limits = Limits(
        config.rate_limit_per_user, config.rate_limit_failed_auth, config.rate_limit_registration
    )
    app = Starlette(
        routes=routes(
            [
                *extension.ENDPOINTS,
                *OPERATIONS,
                *webhooks.ENDPOINTS,
                *audit.ENDPOINTS,
                *audit_history.ENDPOINTS,
                *billing.ENDPOINTS,
                *billing_reads.ENDPOINTS,
                *usage.ENDPOINTS,
            ]
        ),
        middleware=[
            Middleware(RequestId),  # first: every answer names its request, deliveries' too
            Middleware(WebhookShortcut),  # next: deliveries skip what does not apply to them
            Middleware(
                Cors,
                allow_origins=config.origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "X-User-ID", "X-Request-ID"],
                expose_headers=[HEADER],
            ),
            Middleware(RateLimit, per_address=config.rate_limit_per_address),
        ],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.router = Routes(app.router.routes, lifespan=lifespan)  # same routes, found faster
    return app


app = create_app()
