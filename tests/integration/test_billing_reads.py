"""Billing API v1, the reads, through the app on both stores, after signed webhook
streams: invoices, entitlements and the gate, notifications; nobody else's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

ADA = "user_1767225600_adaadaadaa"
BOB = "user_1767225600_bobbobbobb"
DAY = 86_400
T = 1_767_225_600


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings: Settings = make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_RATE_LIMIT_PER_USER="100000/minute",  # the tests poll
        LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
    )
    with TestClient(create_app(settings)) as c:
        yield c


class User:
    def __init__(self, client: TestClient, user_id: str) -> None:
        self.client, self.id = client, user_id
        answer = client.post("/api/users", json={"user_id": user_id})
        assert answer.status_code == 201, answer.text
        self.headers = {"X-User-ID": user_id, "Authorization": f"Bearer {answer.json()['token']}"}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1/billing/{path}", params=params, headers=self.headers)


class Stripe:
    """Signed deliveries for one customer and subscription of a user."""

    def __init__(self, client: TestClient, user: str, n: str) -> None:
        self.client, self.user, self.n = client, user, n
        self.cus, self.sub = f"cus_{n}", f"sub_{n}"
        self.count = 0

    def send(self, event_type: str, obj: dict[str, Any], created: int) -> None:
        self.count += 1
        deliver(self.client, f"evt_{self.n}_{self.count}", event_type, obj, created)

    def customer(self, created: int = T, email: str | None = None) -> None:
        customer = so.customer(self.cus, user_id=self.user, email=email)
        self.send("customer.created", customer, created)

    def subscription(self, created: int, status: str = "active", **kw: Any) -> None:
        kw.setdefault("price_id", "price_lisa_premium_monthly")
        event_type = "customer.subscription.updated" if self.count > 1 else "created"
        if event_type == "created":
            event_type = "customer.subscription.created"
        self.send(event_type, so.subscription(self.sub, self.cus, status=status, **kw), created)


def kinds(user: User) -> list[str]:
    return [n["kind"] for n in user.get("notifications").json()["data"]]


def wait_for_kinds(user: User, expected: list[str]) -> list[dict[str, Any]]:
    try:
        eventually(lambda: kinds(user) == expected)
    except AssertionError:
        assert kinds(user) == expected  # says what differs
    return user.get("notifications").json()["data"]


def test_invoices_newest_first_in_pages_and_only_the_users_own(client: TestClient) -> None:
    ada, bob = User(client, ADA), User(client, BOB)
    stripe = Stripe(client, ADA, "ada")
    stripe.customer()
    stripe.subscription(T + 1)
    for i, created in enumerate((T + 10, T + 30 * DAY, T + 60 * DAY), 1):
        invoice = so.invoice(
            f"in_ada{i}", "cus_ada", "sub_ada", created=created,
            period_start=created, period_end=created + 30 * DAY,
            status="open" if i == 3 else "paid",
        )  # fmt: skip
        invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{i}"
        kind = "invoice.payment_failed" if i == 3 else "invoice.paid"
        stripe.send(kind, invoice, created + 5)
    page = eventually(lambda: (p := ada.get("invoices").json())["data"][2:] and p)
    assert page == {
        "data": [
            {
                "id": f"in_ada{i}",
                "number": f"INV-n_ada{i}",
                "status": "payment_failed" if i == 3 else "paid",
                "amount_due": 999,
                "amount_paid": 0 if i == 3 else 999,
                "currency": "usd",
                "period_start": created,
                "period_end": created + 30 * DAY,
                "paid_at": None if i == 3 else created + 5,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/{i}",
            }
            for i, created in ((3, T + 60 * DAY), (2, T + 30 * DAY), (1, T + 10))
        ],
        "has_more": False,
    }
    first = ada.get("invoices", limit=2).json()
    assert [i["id"] for i in first["data"]] == ["in_ada3", "in_ada2"] and first["has_more"]
    rest = ada.get("invoices", limit=2, starting_after="in_ada2").json()
    assert [i["id"] for i in rest["data"]] == ["in_ada1"] and not rest["has_more"]

    assert bob.get("invoices").json() == {"data": [], "has_more": False}
    refused = bob.get("invoices", starting_after="in_ada2")  # Ada's invoice: not Bob's cursor
    assert (refused.status_code, refused.json()["error_code"]) == (400, "invalid_starting_after")
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}):
        answer = ada.get("invoices", **bad)
        assert (answer.status_code, answer.json()["error_code"]) == (400, "bad_request")


def test_entitlements_and_the_gate_follow_the_subscription(client: TestClient) -> None:
    ada, bob = User(client, ADA), User(client, BOB)
    free = {
        "tier": "free", "plan_id": "free", "active": False, "features": ["status_check"],
        "limits": {"saved_items": 10}, "in_grace_until": None,
    }  # fmt: skip
    assert ada.get("entitlements").json() == free
    assert ada.get("entitlements/check", feature="status_check").json() == {"allowed": True}
    refused = ada.get("entitlements/check", feature="premium_features")
    assert refused.status_code == 402
    assert refused.json() == {
        "allowed": False, "reason": "not_in_plan", "upgrade_to": "lisa_premium",
    }  # fmt: skip

    stripe = Stripe(client, ADA, "ada")
    stripe.customer()
    now = int(time.time())
    stripe.subscription(now - 10)
    premium = {
        "tier": "premium", "plan_id": "lisa_premium", "active": True,
        "features": ["status_check", "premium_features", "priority_support"],
        "limits": {"saved_items": 10000}, "in_grace_until": None,
    }  # fmt: skip
    eventually(lambda: ada.get("entitlements").json() == premium)
    assert ada.get("entitlements/check", feature="premium_features").json() == {"allowed": True}
    sso = ada.get("entitlements/check", feature="sso")
    assert (sso.status_code, sso.json()) == (
        402,
        {"allowed": False, "reason": "not_in_plan", "upgrade_to": "enterprise"},
    )
    api = ada.get("entitlements/check", feature="api_access").json()
    assert api["upgrade_to"] == "starter"  # the cheapest plan that has it
    unknown = ada.get("entitlements/check", feature="teleportation")
    assert (unknown.status_code, unknown.json()["error_code"]) == (400, "unknown_feature")
    assert ada.get("entitlements/check").json()["error_code"] == "bad_request"
    assert bob.get("entitlements").json() == free  # Ada's plan is not Bob's

    stripe.subscription(now - 5, "past_due")  # within LISA Premium's 3 days of grace
    in_grace = {**premium, "in_grace_until": now - 5 + 3 * DAY}
    eventually(lambda: ada.get("entitlements").json() == in_grace)
    assert ada.get("entitlements/check", feature="premium_features").json() == {"allowed": True}

    stripe.subscription(now - 4, "unpaid")
    eventually(lambda: ada.get("entitlements").json() == free)
    inactive = ada.get("entitlements/check", feature="premium_features")
    assert (inactive.status_code, inactive.json()["reason"]) == (402, "inactive")
    assert ada.get("entitlements/check", feature="status_check").json() == {"allowed": True}

    stripe.subscription(now - 3, "canceled", ended_at=now - 3)
    eventually(lambda: ada.get("entitlements/check", feature="premium_features").json()["reason"]
               == "not_in_plan")  # fmt: skip


def test_a_grace_that_ended_is_told_apart(client: TestClient) -> None:
    ada = User(client, ADA)
    stripe = Stripe(client, ADA, "ada")
    stripe.customer()
    stripe.subscription(T, price_id="price_starter_monthly", amount=1900)
    stripe.subscription(T + DAY, "past_due", price_id="price_starter_monthly", amount=1900)
    answer = eventually(
        lambda: (
            (a := ada.get("entitlements/check", feature="api_access")).json().get("reason")
            == "grace_ended"
            and a
        )
    )
    assert (answer.status_code, answer.json()) == (
        402,
        {"allowed": False, "reason": "grace_ended", "upgrade_to": "starter"},
    )
    assert ada.get("entitlements").json()["active"] is False


def test_notifications_tell_each_change_in_cursor_order(client: TestClient) -> None:
    ada, bob = User(client, ADA), User(client, BOB)
    stripe = Stripe(client, ADA, "ada")
    stripe.customer()
    stripe.subscription(T, "trialing", trial_end=T + 7 * DAY)
    stripe.send(
        "customer.subscription.trial_will_end",
        so.subscription("sub_ada", "cus_ada", status="trialing", trial_end=T + 7 * DAY,
                        price_id="price_lisa_premium_monthly"),
        T + 4 * DAY,
    )  # fmt: skip
    stripe.subscription(T + 7 * DAY, "active")
    stripe.subscription(T + 8 * DAY, "past_due")
    stripe.subscription(T + 9 * DAY, "active")
    stripe.subscription(T + 10 * DAY, "active", cancel_at_period_end=True)
    stripe.subscription(T + 11 * DAY, "active")
    stripe.subscription(T + 12 * DAY, "active", price_id="price_professional_monthly", amount=4900)
    expected = [
        "activated",
        "features_granted",
        "trial_ending",
        "payment_failed",
        "payment_recovered",
        "cancellation_scheduled",
        "cancellation_withdrawn",
        "plan_changed",
        "features_granted",
        "features_revoked",
    ]
    data = wait_for_kinds(ada, expected)
    cursors = [n["cursor"] for n in data]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert all(n["subscription_id"] == "sub_ada" for n in data)
    assert data[1] | {"cursor": 0} == {
        "cursor": 0, "kind": "features_granted", "at": T, "subscription_id": "sub_ada",
        "features": ["premium_features", "priority_support"],
    }  # fmt: skip
    assert data[2]["trial_end"] == T + 7 * DAY and data[2]["at"] == T + 4 * DAY
    assert data[5]["at_period_end"] is True
    assert {k: data[7][k] for k in ("plan_id", "previous_plan_id", "price_id")} == {
        "plan_id": "professional",
        "previous_plan_id": "lisa_premium",
        "price_id": "price_professional_monthly",
    }
    assert data[8]["features"] == ["api_access", "team_management", "usage_reports"]
    assert data[9]["features"] == ["premium_features", "priority_support"]

    page = ada.get("notifications", after=cursors[2], limit=2).json()
    assert [n["kind"] for n in page["data"]] == ["payment_failed", "payment_recovered"]
    assert page["next"] == cursors[4]
    empty = ada.get("notifications", after=cursors[-1]).json()
    assert empty == {"data": [], "next": cursors[-1]}
    assert bob.get("notifications").json() == {"data": [], "next": 0}
    for bad in ({"after": -1}, {"limit": 0}, {"after": "x"}):
        answer = ada.get("notifications", **bad)
        assert (answer.status_code, answer.json()["error_code"]) == (400, "bad_request")
    # the stream refuses a bad resume cursor before it starts (it never ends: the
    # answers read here are refusals only; tests/integration/test_stream.py reads it)
    stream = "/api/v1/billing/notifications/stream"
    for query, headers in (
        ("?after=x", {}),
        ("?after=-1", {}),
        ("?nope=1", {}),
        ("", {"Last-Event-ID": "x"}),
        ("", {"Last-Event-ID": "9" * 19}),
    ):
        answer = client.get(stream + query, headers={**ada.headers, **headers})
        assert (answer.status_code, answer.json()["error_code"]) == (400, "bad_request")


@pytest.mark.parametrize(
    "path",
    [
        "invoices",
        "entitlements",
        "entitlements/check?feature=sso",
        "notifications",
        "notifications/stream",
    ],
)
def test_every_route_needs_the_users_own_token(client: TestClient, path: str) -> None:
    ada, bob = User(client, ADA), User(client, BOB)
    url = f"/api/v1/billing/{path}"
    for headers in (
        {},
        {"X-User-ID": ADA},
        {"X-User-ID": ADA, "Authorization": bob.headers["Authorization"]},  # Bob's token
        {"X-User-ID": ADA, "Authorization": "Bearer nope"},
    ):
        answer = client.get(url, headers=headers)
        assert (answer.status_code, answer.json()["error_code"]) == (401, "unauthorized")
    assert ada.headers != bob.headers
