"""The billing API against a real fake Stripe, for what localstripe serves
(customers, subscriptions on plans, plan changes, cancel, resume): our service
under uvicorn, localstripe on loopback delivering its own signed webhooks.

localstripe sends no `customer.subscription.updated`: after each change the
test reads the subscription back from localstripe and delivers that object as
a signed `customer.subscription.updated` itself (what Stripe would send)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger.domain.user import User
from ledger.opening import open_ledger
from scripts.dev.demo import SECRET, Answer, call
from scripts.dev.loadgen import start_server
from scripts.dev.localstripe_server import create_plan, localstripe, register_webhook
from tests import stripe_objects as so
from tests.conftest import make_settings, stored_events

pytestmark = pytest.mark.slow
USER = "user_1767225600_billinge2e"
KEY = "sk_test_billing_e2e"


@contextmanager
def billing_stack(database_url: str, workdir: Path) -> Iterator[tuple[str, str]]:
    with localstripe(workdir / "localstripe") as fake:
        create_plan(fake.url, "price_starter_monthly", 1900, "month", "Starter - Monthly")
        create_plan(fake.url, "price_professional_monthly", 4900, "month", "Professional")
        server = start_server(
            database_url,
            env_extra={
                "STRIPE_SECRET_KEY": KEY,
                "STRIPE_API_BASE": fake.url,
                "STRIPE_PAYMENT_BEHAVIOR": "allow_incomplete",
                "STRIPE_TEST_PAYMENT_METHOD": "pm_card_visa",
                "LEDGER_PROCESSOR": "inline",
                "LEDGER_PROCESSOR_INTERVAL": "0.1",
                "LEDGER_RATE_LIMIT_PER_USER": "6000/minute",  # the test polls
            },
            secret=SECRET,
            log_path=workdir / "ledger.log",
        )
        try:
            register_webhook(fake.url, f"{server.base_url}/webhooks/stripe", SECRET)
            yield server.base_url, fake.url
        finally:
            server.stop()


def until(check: Callable[[], Answer], accept: Callable[[dict[str, Any]], bool]) -> Answer:
    deadline = time.monotonic() + 20
    while not accept((answer := check()).body):
        assert time.monotonic() < deadline, answer.body
        time.sleep(0.2)
    return answer


def relay_updated(base: str, fake: str, sub_id: str, n: int) -> None:
    """Deliver localstripe's current subscription as Stripe's update event."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{fake}/v1/subscriptions/{sub_id}", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        obj = json.loads(answer.read())
    body = so.body_of(
        so.event(
            f"evt_relay_{n}",
            "customer.subscription.updated",
            obj,
            created=int(time.time()) + n,
            shape="legacy",
        )
    )
    delivery = urllib.request.Request(  # noqa: S310 - loopback
        f"{base}/webhooks/stripe",
        data=body,
        method="POST",
        headers={"Stripe-Signature": so.sign(body, SECRET), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(delivery, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 200


def test_billing_actions_against_localstripe(database_url: str, tmp_path: Path) -> None:
    with billing_stack(database_url, tmp_path) as (base, fake):
        token = call(base, "POST", "/api/users", {"user_id": USER}).body["token"]
        auth = {"X-User-ID": USER, "Authorization": f"Bearer {token}"}

        def api(method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
            return call(base, method, f"/api/v1/billing/{path}", body, auth)

        def subscription() -> Answer:
            return api("GET", "subscription")

        created = api(
            "POST", "subscription", {"price_id": "price_starter_monthly", "trial_days": 0}
        )
        assert created.status == 201, created.body
        assert created.body["id"].startswith("sub_") and created.body["confirmed"] is False
        shown = until(subscription, lambda b: b.get("status") == "active").body
        assert (shown["plan_id"], shown["active"], shown["tier"]) == ("starter", True, "starter")

        named = api("PATCH", "customer", {"name": "Ada Lovelace"})
        assert named.status == 200, named.body
        assert (named.body["name"], named.body["confirmed"]) == ("Ada Lovelace", False)
        until(lambda: api("GET", "customer"), lambda b: b.get("name") == "Ada Lovelace")

        upgraded = api("PATCH", "subscription", {"price_id": "price_professional_monthly"})
        assert upgraded.status == 200, upgraded.body
        assert (upgraded.body["change"], upgraded.body["effective"]) == ("upgrade", "now")
        relay_updated(base, fake, created.body["id"], 1)
        until(subscription, lambda b: b.get("plan_id") == "professional")

        canceled = api("DELETE", "subscription")
        assert canceled.status == 200, canceled.body
        assert canceled.body["cancel_at_period_end"] is True
        relay_updated(base, fake, created.body["id"], 2)
        until(subscription, lambda b: b.get("cancel_at_period_end") is True)

        resumed = api("POST", "subscription/resume")
        assert resumed.status == 200, resumed.body
        relay_updated(base, fake, created.body["id"], 3)
        until(subscription, lambda b: b.get("cancel_at_period_end") is False)

        ended = call(base, "DELETE", "/api/v1/billing/subscription?at_period_end=false", None, auth)
        assert ended.status == 200, ended.body
        # localstripe sends customer.subscription.deleted itself, but its clock may
        # trail ours: relayed too, so the ledger's newest state is the canceled one.
        relay_updated(base, fake, created.body["id"], 4)
        shown = until(subscription, lambda b: b.get("status") == "canceled").body
        assert (shown["active"], shown["tier"]) == (False, "free")

    with open_ledger(make_settings(database_url)) as ledger:
        kinds = [type(e).__name__ for e in stored_events(ledger, User.create_id(USER))]
    assert kinds == [
        "Registered",
        "CustomerCreated",
        "SubscriptionCreated",
        "CustomerDetailsUpdated",
        "PlanChangeRequested",
        "CancellationRequested",
        "ResumeRequested",
        "CancellationRequested",
    ]
