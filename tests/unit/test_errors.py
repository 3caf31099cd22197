"""One map from errors to answers, walked by class hierarchy everywhere: a
subclass of a refusal is answered, and counted, as its parent is."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from api.errors import describe, exception_handlers
from api.webhooks import stripe_webhook
from ledger.accounts import SubscriptionExists
from ledger.intake import StoreUnavailable


class LateLog(StoreUnavailable):
    """A refusal nobody put in the map: only its parent is there."""


class RefusingIntake:
    async def receive(self, body: bytes, signature_header: str | None) -> bool:
        raise LateLog("the log is late")


def app() -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        yield {"intake": RefusingIntake(), "settings": SimpleNamespace(webhook_max_body_bytes=1024)}

    return Starlette(
        routes=[Route("/webhooks/stripe", stripe_webhook, methods=["POST"])],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )


def counted(result: str) -> float:
    value = REGISTRY.get_sample_value("ledger_webhook_deliveries_total", {"result": result})
    return value or 0.0


def test_a_subclass_of_a_refusal_is_described_as_its_parent() -> None:
    class AlreadySubscribed(SubscriptionExists):
        pass

    assert describe(AlreadySubscribed("sub_A is active")) == (
        409,
        "subscription_exists",
        "sub_A is active",
    )
    assert describe(LateLog("late"))[:2] == (503, "store_unavailable")


def test_a_webhook_refused_by_a_subclass_is_answered_and_counted_as_its_parent() -> None:
    before = counted("store_unavailable")
    with TestClient(app()) as client:
        answer = client.post("/webhooks/stripe", content=b"{}")
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "store_unavailable"
    assert answer.headers["retry-after"] == "5"
    assert counted("store_unavailable") == before + 1
