"""Seed 004's lifecycle scenarios (6.3) on SQLite and PostgreSQL, through the
billing API and signed webhooks: checkout to access; trial to active; upgrade
with proration; downgrade pending until the period end; cancel at period end
then the free tier; resume; payment failure inside and past the grace.

Stripe's side of each action is the exact request the `stripe` library sends
(through its pluggable HTTP client, answered from Stripe's example objects);
what Stripe then does arrives as signed webhooks built from the same objects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.app import create_app
from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.user import User
from ledger.opening import open_ledger
from ledger.personal import PREFIX
from ledger.plans import DEFAULT_PLANS_FILE, load_catalog
from ledger.stripe.gateway import StripeGateway
from projections.read_side import ReadSide
from projections.rebuild import rebuild
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings, stored_events
from tests.stripe_transport import RecordingTransport

API_KEY = "sk_test_51BillingLifecycleKey000000000"
USER = "user_1767225600_lifecycle1"
APP = "https://app.example.com"
DAY = 86_400
NOW = int(time.time())
START, END = NOW - 5 * DAY, NOW + 25 * DAY  # the current period
T0 = NOW - 20 * DAY  # webhooks' `created`, increasing from here


def plans_file(tmp_path: Path) -> Path:
    """The shipped plans, plus a plan priced in euros (for currency refusals)."""
    data = yaml.safe_load(DEFAULT_PLANS_FILE.read_text())
    data["plans"].append(
        {
            "id": "starter_eu",
            "name": "Starter EU",
            "tier": "starter",
            "rank": 10,
            "prices": [
                {
                    "id": "price_starter_monthly_eur",
                    "name": "Starter EU - Monthly",
                    "amount": 1900,
                    "currency": "eur",
                    "interval": "month",
                }
            ],
        }
    )
    path = tmp_path / "plans.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def billing_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        STRIPE_SECRET_KEY=SecretStr(API_KEY),
        LEDGER_ALLOWED_REDIRECTS=f"{APP}/billing,{APP}/account",
        LEDGER_PLANS_FILE=plans_file(tmp_path),
    )


@pytest.fixture
def client(
    billing_settings: Settings, transport: RecordingTransport, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setattr(
        "api.bootstrap.StripeGateway", partial(StripeGateway, http_client=transport)
    )
    with TestClient(create_app(billing_settings)) as c:
        yield c


@pytest.fixture
def ledger(billing_settings: Settings) -> Iterator[Ledger]:
    with open_ledger(billing_settings) as app:
        yield app


@pytest.fixture
def read(ledger: Ledger, billing_settings: Settings) -> Iterator[ReadSide]:
    """Reads the projections the app keeps (never runs them itself)."""
    side = ReadSide(
        ledger, load_catalog(billing_settings.plans_file), billing_settings.database_url
    )
    try:
        yield side
    finally:
        side.close()


class Story:
    """One user's story: its API calls and the webhooks Stripe sends it."""

    def __init__(self, client: TestClient, user_id: str = USER) -> None:
        self.client = client
        token = client.post("/api/users", json={"user_id": user_id}).json()["token"]
        self.headers = {"X-User-ID": user_id, "Authorization": f"Bearer {token}"}
        self.user_id = user_id
        self.t = T0
        self.n = 0

    def call(self, method: str, path: str, request_id: str | None = None, **kwargs: Any) -> Any:
        headers = (
            self.headers if request_id is None else {**self.headers, "X-Request-ID": request_id}
        )
        answer = self.client.request(method, f"/api/v1/billing/{path}", headers=headers, **kwargs)
        assert request_id is None or answer.headers["Request-Id"] == request_id
        return answer

    def webhook(self, event_type: str, obj: dict[str, Any], created: int | None = None) -> None:
        self.n += 1
        self.t = created if created is not None else self.t + 60
        deliver(self.client, f"evt_{self.user_id[-10:]}_{self.n}", event_type, obj, self.t)

    def subscription(self, **expected: Any) -> dict[str, Any]:
        """GET the subscription until it shows `expected` (projections catch up)."""

        def answer() -> dict[str, Any] | None:
            got = self.call("GET", "subscription").json()
            return got if all(got.get(k) == v for k, v in expected.items()) else None

        return eventually(answer)

    def customer_created(self, cus: str = "cus_1") -> None:
        self.webhook("customer.created", so.customer(cus, email="ada@example.com", user_id=USER))

    def subscribed(self, price: str, amount: int, **kw: Any) -> None:
        self.customer_created()
        self.webhook("customer.subscription.created", sub(price, amount, **kw))
        self.subscription(price_id=price, status=kw.get("status", "active"))


def sub(price: str = "price_starter_monthly", amount: int = 1900, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"period_start": START, "period_end": END, "user_id": USER}
    values.update(kw)
    return so.subscription(
        "sub_1",
        "cus_1",
        price_id=price,
        amount=amount,
        interval="year" if "yearly" in price else "month",
        **values,
    )


def user_events(ledger: Ledger, user_id: str = USER) -> list[str]:
    return [type(e).__name__ for e in stored_events(ledger, User.create_id(user_id))]


# --- 6.3.1 checkout to access ----------------------------------------------------------


def test_checkout_then_webhooks_give_access(
    client: TestClient, transport: RecordingTransport, ledger: Ledger, read: ReadSide
) -> None:
    story = Story(client)
    assert story.call("GET", "subscription").json() == {"active": False, "id": None, "tier": "free"}
    transport.answer(200, so.customer("cus_1", user_id=USER))
    transport.answer(200, so.open_checkout_session("cs_1", "cus_1", user_id=USER))
    answer = story.call(
        "POST",
        "checkout",
        json={
            "price_id": "price_starter_monthly",
            "success_url": f"{APP}/billing/done?session={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{APP}/billing",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": "cs_1", "url": "https://checkout.stripe.com/c/pay/cs_1"}
    customer, session = transport.requests
    assert (customer.path, customer.params) == ("/v1/customers", {"metadata[user_id]": USER})
    assert session.path == "/v1/checkout/sessions"
    assert session.params["customer"] == "cus_1"
    assert session.params["client_reference_id"] == USER
    assert session.params["subscription_data[metadata][user_id]"] == USER
    assert session.params["subscription_data[trial_period_days]"] == "14"
    assert user_events(ledger) == ["Registered", "CustomerCreated", "CheckoutStarted"]

    story.webhook("customer.created", so.customer("cus_1", email="ada@example.com", user_id=USER))
    story.webhook(
        "checkout.session.completed",
        so.checkout_session("cs_1", "cus_1", "sub_1", user_id=USER, amount=0),
    )
    story.webhook(
        "customer.subscription.created",
        sub(status="trialing", trial_end=END, user_id=None),  # linked by the checkout
    )
    shown = story.subscription(status="trialing")
    assert shown["active"] is True
    assert (shown["plan_id"], shown["tier"], shown["trial_end"]) == ("starter", "starter", END)
    # each projection follows the log on its own: entitlements may trail subscription_status
    assert eventually(lambda: read.entitlements(USER)["features"] == ["status_check", "api_access"])
    customer = {"customer_id": "cus_1", "email": "ada@example.com", "name": None}
    assert eventually(lambda: story.call("GET", "customer").json() == customer)


# --- 6.3.2 the subscription's life -----------------------------------------------------


def test_trial_then_active(client: TestClient, transport: RecordingTransport) -> None:
    story = Story(client)
    transport.answer(200, so.customer("cus_1", user_id=USER))
    transport.answer(200, sub("price_professional_monthly", 4900, status="trialing", trial_end=END))
    answer = story.call("POST", "subscription", json={"price_id": "price_professional_monthly"})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert {k: created[k] for k in ("id", "status", "active", "plan_id", "trial_end")} == {
        "id": "sub_1",
        "status": "trialing",
        "active": True,
        "plan_id": "professional",
        "trial_end": END,
    }
    assert created["confirmed"] is False and created["pending_change"] is None
    request = transport.requests[1]
    assert request.params["trial_period_days"] == "14"
    assert request.params["payment_behavior"] == "default_incomplete"

    story.webhook(
        "customer.subscription.created",
        sub("price_professional_monthly", 4900, status="trialing", trial_end=END),
    )
    assert story.subscription(status="trialing")["trial_end"] == END
    story.webhook("customer.subscription.updated", sub("price_professional_monthly", 4900))
    shown = story.subscription(status="active")
    assert (shown["active"], shown["tier"]) == (True, "professional")
    again = story.call("POST", "subscription", json={"price_id": "price_starter_monthly"})
    assert (again.status_code, again.json()["error_code"]) == (409, "subscription_exists")
    assert len(transport.requests) == 2  # nothing more sent


def test_upgrade_now_with_proration(
    client: TestClient, transport: RecordingTransport, ledger: Ledger, read: ReadSide
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    transport.answer(200, sub())
    transport.answer(200, sub("price_professional_monthly", 4900))
    answer = story.call("PATCH", "subscription", json={"price_id": "price_professional_monthly"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "change": "upgrade",
        "effective": "now",
        "subscription_id": "sub_1",
        "price_id": "price_professional_monthly",
        "plan_id": "professional",
        "effective_at": None,
        "proration_behavior": "always_invoice",
        "status": "active",
        "confirmed": False,
    }
    update = transport.requests[1]
    assert update.params["items[0][price]"] == "price_professional_monthly"
    assert update.params["proration_behavior"] == "always_invoice"
    assert user_events(ledger)[-1] == "PlanChangeRequested"

    story.webhook("customer.subscription.updated", sub("price_professional_monthly", 4900))
    prorated = so.invoice("in_prorated", "cus_1", "sub_1", amount=2400)
    prorated["billing_reason"] = "subscription_update"
    story.webhook("invoice.paid", prorated)
    shown = story.subscription(price_id="price_professional_monthly")
    assert (shown["plan_id"], shown["tier"]) == ("professional", "professional")
    invoices = eventually(lambda: read.invoices(USER))
    assert [(i["stripe_invoice_id"], i["amount_paid"]) for i in invoices] == [("in_prorated", 2400)]


def test_downgrade_waits_for_the_period_end(
    client: TestClient, transport: RecordingTransport, read: ReadSide
) -> None:
    story = Story(client)
    story.subscribed("price_professional_monthly", 4900)
    current = [("price_professional_monthly", START, END)]
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    transport.answer(
        200,
        so.schedule(
            "sub_sched_1", "sub_1", "cus_1", [*current, ("price_starter_monthly", END, None)]
        ),
    )
    answer = story.call("PATCH", "subscription", json={"price_id": "price_starter_monthly"})
    assert answer.status_code == 200, answer.text
    assert {k: answer.json()[k] for k in ("change", "effective", "effective_at")} == {
        "change": "downgrade",
        "effective": "period_end",
        "effective_at": END,
    }
    assert [r.path for r in transport.requests] == [
        "/v1/subscription_schedules",
        "/v1/subscription_schedules/sub_sched_1",
    ]
    pending = {"price_id": "price_starter_monthly", "plan_id": "starter", "effective_at": END}
    shown = story.subscription(pending_change=pending)
    assert (shown["plan_id"], shown["tier"]) == ("professional", "professional")
    assert eventually(lambda: read.entitlements(USER)["plan_id"] == "professional")

    # The period ends: Stripe's schedule switches the price.
    story.webhook("customer.subscription.updated", sub(period_start=END, period_end=END + 30 * DAY))
    shown = story.subscription(plan_id="starter", pending_change=None)
    assert shown["tier"] == "starter"
    assert eventually(lambda: read.entitlements(USER)["plan_id"] == "starter")


def test_resume_drops_a_pending_downgrade(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    story.subscribed("price_professional_monthly", 4900)
    current = [("price_professional_monthly", START, END)]
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    story.call("PATCH", "subscription", json={"price_id": "price_starter_monthly"})
    story.subscription(
        pending_change={
            "price_id": "price_starter_monthly",
            "plan_id": "starter",
            "effective_at": END,
        }
    )
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    answer = story.call("POST", "subscription/resume")
    assert answer.status_code == 200, answer.text
    assert answer.json()["withdrew_pending_change"] is True
    assert answer.json()["withdrew_cancellation"] is False
    assert transport.requests[-1].path == "/v1/subscription_schedules/sub_sched_1/release"
    assert story.subscription(pending_change=None)["plan_id"] == "professional"
    assert user_events(ledger)[-1] == "ResumeRequested"


def test_cancel_at_period_end_keeps_access_until_then_the_free_tier(
    client: TestClient, transport: RecordingTransport, read: ReadSide
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    transport.answer(200, sub(cancel_at_period_end=True))
    answer = story.call("DELETE", "subscription")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "subscription_id": "sub_1",
        "status": "active",
        "cancel_at_period_end": True,
        "cancel_at": END,
        "confirmed": False,
    }
    [request] = transport.requests
    assert request.params == {"cancel_at_period_end": "true"}

    story.webhook("customer.subscription.updated", sub(cancel_at_period_end=True))
    shown = story.subscription(cancel_at_period_end=True)
    assert (shown["active"], shown["tier"], shown["cancel_at"]) == (True, "starter", END)
    story.webhook("customer.subscription.deleted", sub(status="canceled", ended_at=END), END)
    shown = story.subscription(status="canceled")
    assert (shown["active"], shown["tier"]) == (False, "free")
    assert eventually(lambda: read.entitlements(USER)["tier"] == "free")


def test_cancel_now(client: TestClient, transport: RecordingTransport) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    transport.answer(200, sub(status="canceled", ended_at=NOW))
    answer = story.call("DELETE", "subscription?at_period_end=false")
    assert answer.status_code == 200, answer.text
    assert answer.json()["cancel_at"] == NOW
    assert (transport.requests[0].method, transport.requests[0].path) == (
        "delete",
        "/v1/subscriptions/sub_1",
    )


def test_resume_before_the_end_keeps_the_plan(
    client: TestClient, transport: RecordingTransport
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900, cancel_at_period_end=True)
    transport.answer(200, sub())
    answer = story.call("POST", "subscription/resume")
    assert answer.status_code == 200, answer.text
    assert answer.json()["withdrew_cancellation"] is True
    [request] = transport.requests
    assert request.params == {"cancel_at_period_end": "false"}
    story.webhook("customer.subscription.updated", sub())
    shown = story.subscription(cancel_at_period_end=False)
    assert (shown["active"], shown["plan_id"], shown["cancel_at"]) == (True, "starter", None)
    again = story.call("POST", "subscription/resume")
    assert (again.status_code, again.json()["error_code"]) == (409, "nothing_to_resume")
    assert len(transport.requests) == 1


def test_resume_clears_a_cancellation_with_a_date(
    client: TestClient, transport: RecordingTransport
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900, cancel_at=END - DAY)
    transport.answer(200, sub())
    assert story.call("POST", "subscription/resume").status_code == 200
    assert transport.requests[0].params == {"cancel_at": ""}


# --- 6.3.5 payment failure and the grace -----------------------------------------------


def test_a_failed_payment_keeps_access_inside_the_grace_and_recovery_restores_it(
    client: TestClient,
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    failed_at = NOW - DAY
    story.webhook(
        "invoice.payment_failed",
        so.invoice("in_1", "cus_1", "sub_1", amount=1900, status="open"),
        failed_at,
    )
    story.webhook("customer.subscription.updated", sub(status="past_due"), failed_at + 1)
    shown = story.subscription(status="past_due")
    assert (shown["active"], shown["tier"]) == (True, "starter")
    assert shown["in_grace_until"] == failed_at + 7 * DAY
    story.webhook("invoice.paid", so.invoice("in_1", "cus_1", "sub_1", amount=1900), NOW)
    story.webhook("customer.subscription.updated", sub(), NOW + 1)
    shown = story.subscription(status="active")
    assert (shown["active"], shown["in_grace_until"]) == (True, None)


def test_the_end_of_the_grace_removes_access(client: TestClient, read: ReadSide) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    failed_at = NOW - 8 * DAY  # starter's grace is 7 days
    story.webhook(
        "invoice.payment_failed",
        so.invoice("in_1", "cus_1", "sub_1", amount=1900, status="open"),
        failed_at,
    )
    story.webhook("customer.subscription.updated", sub(status="past_due"), failed_at + 1)
    shown = story.subscription(status="past_due")
    assert (shown["active"], shown["tier"]) == (False, "free")
    assert shown["in_grace_until"] == failed_at + 7 * DAY
    assert eventually(lambda: read.entitlements(USER)["tier"] == "free")


# --- bad input: the error shape, nothing recorded, nothing sent ------------------------


def refused(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "error_code"}
    assert answer.json()["error_code"] == code


CHECKOUT = {
    "price_id": "price_starter_monthly",
    "success_url": f"{APP}/billing/ok",
    "cancel_url": f"{APP}/billing",
}


def test_bad_input_on_every_route_is_refused_before_anything_happens(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    # Nothing to act on yet.
    refused(story.call("GET", "customer"), 404, "customer_not_found")
    refused(story.call("PATCH", "customer", json={"name": "Ada"}), 404, "customer_not_found")
    refused(
        story.call("POST", "portal", json={"return_url": f"{APP}/account"}),
        404,
        "customer_not_found",
    )
    refused(
        story.call("PATCH", "subscription", json={"price_id": "price_starter_yearly"}),
        404,
        "subscription_not_found",
    )
    refused(story.call("DELETE", "subscription"), 404, "subscription_not_found")
    refused(story.call("POST", "subscription/resume"), 409, "nothing_to_resume")
    # Unknown prices.
    unknown = {"price_id": "price_nope"}
    refused(story.call("POST", "subscription", json=unknown), 400, "invalid_price")
    refused(story.call("POST", "checkout", json=CHECKOUT | unknown), 400, "invalid_price")
    # Redirects outside LEDGER_ALLOWED_REDIRECTS.
    for field, url in [
        ("success_url", "https://evil.test/billing"),
        ("cancel_url", f"{APP}.evil.test/billing"),
        ("success_url", f"{APP}/elsewhere"),
    ]:
        refused(
            story.call("POST", "checkout", json=CHECKOUT | {field: url}), 400, "invalid_redirect"
        )
    # Bodies that are not JSON, or not the right JSON.
    for method, path in [
        ("PATCH", "customer"),
        ("POST", "subscription"),
        ("PATCH", "subscription"),
        ("POST", "checkout"),
        ("POST", "portal"),
    ]:
        refused(story.call(method, path, content=b"{not json"), 400, "bad_request")
        refused(story.call(method, path, json=[]), 400, "bad_request")
    refused(story.call("PATCH", "customer", json={}), 400, "bad_request")
    refused(story.call("PATCH", "customer", json={"email": "not-an-email"}), 400, "bad_request")
    refused(
        story.call(
            "POST", "subscription", json={"price_id": "price_starter_monthly", "trial_days": -1}
        ),
        400,
        "bad_request",
    )
    refused(story.call("DELETE", "subscription?at_period_end=maybe"), 400, "bad_request")
    assert user_events(ledger) == ["Registered"]
    assert transport.requests == []


def test_another_currency_and_another_users_subscription_are_refused(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    eur = {"price_id": "price_starter_monthly_eur"}
    refused(story.call("PATCH", "subscription", json=eur), 400, "currency_mismatch")
    story.webhook("customer.subscription.deleted", sub(status="canceled", ended_at=NOW))
    story.subscription(status="canceled")
    refused(story.call("POST", "checkout", json=CHECKOUT | eur), 400, "currency_mismatch")
    refused(story.call("POST", "subscription", json=eur), 400, "currency_mismatch")

    other = Story(client, "user_1767225601_someoneels")
    for method, path in [
        ("GET", "subscription"),
        ("PATCH", "subscription"),
        ("DELETE", "subscription"),
        ("POST", "subscription/resume"),
        ("GET", "customer"),
        ("POST", "portal"),
    ]:
        stolen = {"X-User-ID": USER, "Authorization": other.headers["Authorization"]}
        answer = client.request(
            method,
            f"/api/v1/billing/{path}",
            headers=stolen,
            json={"price_id": "price_starter_yearly"},
        )
        refused(answer, 401, "unauthorized")
    refused(other.call("DELETE", "subscription"), 404, "subscription_not_found")
    assert other.call("GET", "subscription").json()["id"] is None
    assert user_events(ledger) == ["Registered"]
    assert user_events(ledger, other.user_id) == ["Registered"]
    assert transport.requests == []


def test_every_billing_action_records_the_request_id_it_was_asked_with(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    transport.answer(200, so.customer("cus_1", user_id=USER))
    transport.answer(200, so.open_checkout_session("cs_1", "cus_1", user_id=USER))
    urls = {"success_url": f"{APP}/billing/done", "cancel_url": f"{APP}/billing"}
    checkout = {"price_id": "price_professional_monthly", **urls}
    assert story.call("POST", "checkout", "r-checkout", json=checkout).status_code == 200
    transport.answer(200, so.customer("cus_1", email="grace@example.com", user_id=USER))
    details = {"email": "grace@example.com"}
    assert story.call("PATCH", "customer", "r-details", json=details).status_code == 200
    transport.answer(200, so.portal_session("cus_1", f"{APP}/account"))
    portal = {"return_url": f"{APP}/account"}
    assert story.call("POST", "portal", "r-portal", json=portal).status_code == 200
    story.subscribed("price_professional_monthly", 4900)
    current = [("price_professional_monthly", START, END)]
    for _ in range(2):
        transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    down = {"price_id": "price_starter_monthly"}
    assert story.call("PATCH", "subscription", "r-down", json=down).status_code == 200
    story.subscription(pending_change={**down, "plan_id": "starter", "effective_at": END})
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    assert story.call("POST", "subscription/resume", "r-resume").status_code == 200
    story.subscription(pending_change=None)
    transport.answer(200, sub("price_professional_monthly", 4900, cancel_at_period_end=True))
    assert story.call("DELETE", "subscription", "r-cancel").status_code == 200
    for _ in range(3):  # the first try and the library's two retries
        transport.answer(500, {"error": {"message": "down", "type": "api_error"}})
    up = {"price_id": "price_professional_yearly"}
    assert story.call("PATCH", "subscription", "r-fail", json=up).status_code == 502
    other = Story(client, "user_1767225600_requestid2")
    transport.answer(200, so.customer("cus_2", user_id=other.user_id))
    transport.answer(200, sub("price_starter_monthly", 1900))
    new = {"price_id": "price_starter_monthly"}
    assert other.call("POST", "subscription", "r-create", json=new).status_code == 201

    def recorded(user_id: str) -> list[tuple[str, str | None]]:
        found = stored_events(ledger, User.create_id(user_id))
        return [(type(e).__name__, e.request_id) for e in found]  # type: ignore[attr-defined]

    assert recorded(USER)[1:] == [
        ("CustomerCreated", "r-checkout"),
        ("CheckoutStarted", "r-checkout"),
        ("CustomerDetailsUpdated", "r-details"),
        ("PortalOpened", "r-portal"),
        ("PlanChangeRequested", "r-down"),
        ("ResumeRequested", "r-resume"),
        ("CancellationRequested", "r-cancel"),
        ("StripeCallFailed", "r-fail"),
    ]
    assert recorded(other.user_id)[1:] == [
        ("CustomerCreated", "r-create"),
        ("SubscriptionCreated", "r-create"),
    ]


def test_stripe_unavailable_is_502_and_recorded(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    story.subscribed("price_starter_monthly", 1900)
    for _ in range(3):  # the first try and the library's two retries
        transport.answer(500, {"error": {"message": "down", "type": "api_error"}})
    answer = story.call("PATCH", "subscription", json={"price_id": "price_professional_monthly"})
    refused(answer, 502, "stripe_unavailable")
    assert user_events(ledger) == ["Registered", "StripeCallFailed"]
    failed = stored_events(ledger, User.create_id(USER))[-1]
    assert (failed.action, failed.error_code) == ("change_plan", "stripe_unavailable")
    # Stripe's message may quote personal data: held under the customer's key
    plain = ledger.personal.plain(failed.message)
    assert failed.message.startswith(PREFIX) and plain.startswith("Stripe cannot be reached")


def test_update_customer_answers_stripes_values_unconfirmed_then_the_webhook_confirms(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    story.customer_created()
    eventually(lambda: story.call("GET", "customer").status_code == 200)
    transport.answer(
        200, so.customer("cus_1", email="grace@example.com", name="Grace", user_id=USER)
    )
    answer = story.call("PATCH", "customer", json={"email": "grace@example.com", "name": "Grace"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "customer_id": "cus_1",
        "email": "grace@example.com",
        "name": "Grace",
        "confirmed": False,
    }
    assert transport.requests[0].params == {"email": "grace@example.com", "name": "Grace"}
    assert user_events(ledger)[-1] == "CustomerDetailsUpdated"
    before = story.call("GET", "customer")
    assert before.json()["email"] == "ada@example.com"  # not yet
    assert before.headers["cache-control"] == "no-store"
    story.webhook(
        "customer.updated",
        so.customer("cus_1", email="grace@example.com", name="Grace", user_id=USER),
    )
    assert eventually(lambda: story.call("GET", "customer").json()["name"] == "Grace")


def test_portal_session_for_the_users_customer(
    client: TestClient, transport: RecordingTransport, ledger: Ledger
) -> None:
    story = Story(client)
    story.customer_created()
    eventually(lambda: story.call("GET", "customer").status_code == 200)
    transport.answer(200, so.portal_session("cus_1", f"{APP}/account"))
    answer = story.call("POST", "portal", json={"return_url": f"{APP}/account"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"url": "https://billing.stripe.com/p/session/test_bps_1"}
    assert answer.headers["cache-control"] == "no-store"  # per-user answers are never cached
    assert transport.requests[0].params == {"customer": "cus_1", "return_url": f"{APP}/account"}
    assert user_events(ledger)[-1] == "PortalOpened"
    refused(
        story.call("POST", "portal", json={"return_url": "https://evil.test/"}),
        400,
        "invalid_redirect",
    )
    assert len(transport.requests) == 1


def test_the_billing_projections_rebuild_equal_to_live(
    client: TestClient, transport: RecordingTransport, read: ReadSide
) -> None:
    story = Story(client)
    story.subscribed("price_professional_monthly", 4900)
    current = [("price_professional_monthly", START, END)]
    for _ in range(2):
        transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    story.call("PATCH", "subscription", json={"price_id": "price_starter_monthly"})
    story.subscription(
        pending_change={
            "price_id": "price_starter_monthly",
            "plan_id": "starter",
            "effective_at": END,
        }
    )
    ours = [p for p in read.projections if p.name in ("customers", "pending_changes")]

    def snapshot() -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        with read.store.transaction(commit=False) as c:
            for table in (t for p in ours for t in p.tables):
                rows = c.query(f"SELECT * FROM {table}")
                out[table] = sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
        return out

    live = snapshot()
    assert all(live.values())
    for projection in ours:
        rebuild(read.catchup, projection, batch_size=2)
    assert snapshot() == live


# --- erasure (issue 11) covers what the billing API records ----------------------------

ADMIN = {"Authorization": "Bearer adm_test"}


def test_erasure_covers_the_billing_apis_personal_data(
    client: TestClient, transport: RecordingTransport, ledger: Ledger, read: ReadSide
) -> None:
    """What the billing API records of a person is stored encrypted with the
    customer's key: the email and name the user asked for
    (`User.CustomerDetailsUpdated`), the URLs of its Checkout and Portal sessions,
    and the `customers` projection's email and name. Auditors see them until the
    erasure, "[erased]" after; the user's own read answers null; after a full
    rebuild no text column of any projection table holds any of them."""
    email, name = "grace.hopper@example.com", "Grace Hopper"
    back, done = f"{APP}/account?person=grace-hopper", f"{APP}/billing/grace-hopper-done"
    personal = [email, name, back, done]
    story = Story(client)
    story.customer_created()
    eventually(lambda: story.call("GET", "customer").status_code == 200)
    transport.answer(200, so.customer("cus_1", email=email, name=name, user_id=USER))
    assert story.call("PATCH", "customer", json={"email": email, "name": name}).status_code == 200
    story.webhook("customer.updated", so.customer("cus_1", email=email, name=name, user_id=USER))
    assert eventually(lambda: story.call("GET", "customer").json()["email"] == email)
    transport.answer(200, so.portal_session("cus_1", back))
    assert story.call("POST", "portal", json={"return_url": back}).status_code == 200
    transport.answer(200, so.open_checkout_session("cs_1", "cus_1", user_id=USER))
    checkout = {"price_id": "price_starter_monthly", "success_url": done, "cancel_url": done}
    assert story.call("POST", "checkout", json=checkout).status_code == 200

    def projection_text() -> str:
        with read.store.transaction(commit=False) as c:
            return " ".join(
                str(v)
                for projection in read.projections
                for table in projection.tables
                for row in c.query(f"SELECT * FROM {table}")
                for v in row.values()
            )

    def user_events() -> dict[str, dict[str, Any]]:
        answer = client.get("/api/v1/audit/events", params={"user_id": USER}, headers=ADMIN)
        return {e["type"]: e["data"] for e in answer.json()["data"] if e["aggregate"] == "User"}

    assert not any(value in projection_text() for value in personal)  # held encrypted
    shown = user_events()
    assert (shown["CustomerDetailsUpdated"]["email"], shown["PortalOpened"]["return_url"]) == (
        email,
        back,
    )
    assert shown["CheckoutStarted"]["success_url"] == done

    erased = client.post(f"/api/v1/audit/users/{USER}/erase", headers=ADMIN)
    assert erased.status_code == 200 and erased.json()["stripe_customer_ids"] == ["cus_1"]
    shown = user_events()
    assert shown["CustomerDetailsUpdated"]["email"] == shown["CustomerDetailsUpdated"]["name"]
    assert shown["CustomerDetailsUpdated"]["email"] == "[erased]"
    assert shown["PortalOpened"]["return_url"] == "[erased]"
    assert shown["CheckoutStarted"]["success_url"] == "[erased]"
    assert shown["CheckoutStarted"]["price_id"] == "price_starter_monthly"  # the rest stays
    assert story.call("GET", "customer").json() == {
        "customer_id": "cus_1",
        "email": None,
        "name": None,
    }
    for projection in read.projections:
        rebuild(read.catchup, projection)
    assert {"customers", "pending_changes", "usage_totals"} <= {p.name for p in read.projections}
    text = projection_text()
    assert not [value for value in personal if value in text]
