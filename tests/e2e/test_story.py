"""The whole story against a real fake Stripe: localstripe on loopback, our
service under uvicorn, and the signed webhooks localstripe delivers itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.domain.user import User
from ledger.opening import open_ledger
from scripts.dev.demo import call, stack, story
from tests.conftest import make_settings, stored_events

pytestmark = pytest.mark.slow


def test_register_subscribe_webhooks_cancel(database_url: str, tmp_path: Path) -> None:
    lines: list[str] = []
    with stack(database_url, tmp_path) as base:
        seen = story(base, say=lines.append, user_id="user_1767225600_e2etester1")
        at_period_end = cancel_at_period_end(base, "user_1767225600_e2etester2")
    assert at_period_end["canceled"] is True
    assert at_period_end["cancellation_date"] == datetime.fromtimestamp(
        at_period_end["period_end"], UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert seen["register"].status == 201
    assert seen["get-subscription"].body == {"active": False}
    created = seen["create-subscription"]
    assert created.status == 200
    assert set(created.body) == {
        "subscription_id",
        "client_secret",
        "status",
        "current_period_start",
        "current_period_end",
    }
    assert created.body["subscription_id"].startswith("sub_")
    assert {k: type(v) for k, v in created.body.items()} == {
        "subscription_id": str,
        "client_secret": str,
        "status": str,
        "current_period_start": int,
        "current_period_end": int,
    }
    assert created.body["status"] in ("active", "pending")
    assert "_secret_" in created.body["client_secret"]
    active = seen["get-subscription (active)"]
    assert active.body == {
        "active": True, "id": created.body["subscription_id"], "status": "active",
        "plan_name": "LISA Premium - Monthly", "amount": 999, "interval": "month",
        "current_period_start": created.body["current_period_start"],
        "current_period_end": created.body["current_period_end"],
        "cancel_at_period_end": False,
    }  # fmt: skip
    assert seen["verify-subscription"].body == {
        "valid": True,
        "subscription_id": created.body["subscription_id"],
        "status": "active",
    }
    assert seen["update-payment-method"].body == {
        "updated": True,
        "subscription_id": created.body["subscription_id"],
    }
    canceled = seen["cancel-subscription"].body
    assert {k: type(v) for k, v in canceled.items()} == {
        "canceled": bool,
        "subscription_id": str,
        "cancellation_date": str,
    }
    assert canceled["canceled"] is True and canceled["cancellation_date"].endswith("Z")
    assert canceled["subscription_id"] == created.body["subscription_id"]
    ended = seen["get-subscription (ended)"].body
    assert (ended["active"], ended["status"]) == (False, "canceled")

    # every action that changed anything was recorded, with what Stripe answered
    with open_ledger(make_settings(database_url)) as ledger:
        events = stored_events(ledger, User.create_id("user_1767225600_e2etester1"))
    assert [type(e).__qualname__ for e in events] == [
        "User.Registered",
        "User.CustomerCreated",
        "User.SubscriptionCreated",
        "User.PaymentMethodUpdated",
        "User.CancellationRequested",
    ]
    assert events[2].stripe_subscription_id == created.body["subscription_id"]
    assert (events[4].immediate, events[4].stripe_status) == (True, "canceled")


def cancel_at_period_end(base: str, user_id: str) -> dict[str, Any]:
    token = call(base, "POST", "/api/users", {"user_id": user_id}).body["token"]
    auth = {"X-User-ID": user_id, "Authorization": f"Bearer {token}"}
    created = call(
        base,
        "POST",
        "/api/stripe/create-subscription",
        {
            "user_id": user_id,
            "price_id": "price_lisa_premium_monthly",
            "billing_cycle": "month",
            "return_url": None,
        },
        auth,
    )
    assert created.status == 200, created.body
    canceled = call(base, "POST", "/api/stripe/cancel-subscription", {"immediate": False}, auth)
    assert canceled.status == 200, canceled.body
    return {**canceled.body, "period_end": created.body["current_period_end"]}
