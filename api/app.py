"""Assembles the ASGI app. Shared objects are built in the lifespan, not at import."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import audit
from api.errors import exception_handlers
from api.metrics import metrics
from api.webhooks import stripe_webhook
from ledger.config import Settings, load_settings
from ledger.plans import load_catalog
from ledger.service import WriteSide
from projections.read_side import ReadSide


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        config = settings or load_settings()
        catalog = load_catalog(config.plans_file)  # refuses to start on a bad plans file
        write = WriteSide.start(config)
        read = ReadSide(
            write.ledger, catalog, config.database_url, interval=config.processor_interval_seconds
        )
        if config.projections == "inline":
            write.processor.after = read.follower.wake
            read.follower.start()
        try:
            yield {"write": write, "read": read}
        finally:
            read.follower.stop()
            write.close()
            read.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/api/v1/audit/users/{user_id}", audit.user, methods=["GET"]),
            Route("/api/v1/audit/webhooks", audit.webhooks, methods=["GET"]),
            Route("/api/v1/audit/projections", audit.projections, methods=["GET"]),
        ],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )


app = create_app()
