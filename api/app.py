"""Assembles the ASGI app. Shared objects are built in the lifespan, not at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from eventsourcing.persistence import PersistenceError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import audit, billing_reads, extension
from api.bootstrap import Parts
from api.errors import exception_handlers
from api.metrics import metrics
from api.ratelimit import RateLimit
from api.webhooks import stripe_webhook
from ledger.config import Settings
from ledger.intake import StoreUnavailable


async def healthz(request: Request) -> JSONResponse:
    """The process is up."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """The log and the projections answer: send traffic here."""
    try:
        positions = await asyncio.wait_for(run_in_threadpool(request.state.read.positions), 2)
    except (PersistenceError, TimeoutError):
        raise StoreUnavailable("the store does not answer") from None
    return JSONResponse({"status": "ready", "lag": max(p["lag"] for p in positions)})


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        parts = Parts(settings, pool_size=8)
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
                }
            finally:
                await parts.read.close_async()
        finally:
            parts.close()

    config = settings or Settings()  # reads the environment only; secrets come in lifespan
    return Starlette(
        routes=[
            Route("/api/users", extension.register, methods=["POST"]),
            Route(
                "/api/stripe/create-subscription", extension.create_subscription, methods=["POST"]
            ),
            Route("/api/stripe/get-subscription", extension.get_subscription, methods=["GET"]),
            Route(
                "/api/stripe/verify-subscription", extension.verify_subscription, methods=["POST"]
            ),
            Route(
                "/api/stripe/cancel-subscription", extension.cancel_subscription, methods=["POST"]
            ),
            Route(
                "/api/stripe/update-payment-method",
                extension.update_payment_method,
                methods=["POST"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/api/v1/audit/users/{user_id}", audit.user, methods=["GET"]),
            Route("/api/v1/audit/webhooks", audit.webhooks, methods=["GET"]),
            Route("/api/v1/audit/projections", audit.projections, methods=["GET"]),
            Route("/api/v1/billing/invoices", billing_reads.invoices, methods=["GET"]),
            Route("/api/v1/billing/entitlements", billing_reads.entitlements, methods=["GET"]),
            Route("/api/v1/billing/entitlements/check", billing_reads.check, methods=["GET"]),
            Route("/api/v1/billing/notifications", billing_reads.notifications, methods=["GET"]),
            Route(
                "/api/v1/billing/notifications/stream",
                billing_reads.notification_stream,
                methods=["GET"],
            ),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=config.origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-User-ID"],
            ),
            Middleware(
                RateLimit,
                per_user=config.rate_limit_per_user,
                per_address=config.rate_limit_per_address,
            ),
        ],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )


app = create_app()
