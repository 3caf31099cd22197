"""The email outbox, against a local SMTP server the test starts (aiosmtpd on a
free loopback port): one email per notification, for every kind, each once."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from api.app import create_app
from ledger.opening import open_ledger
from projections.notifications import KINDS
from projections.outbox import render
from projections.usage_totals import ALERTS
from scripts.dev.loadgen import free_port
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

USER = "user_1767225600_mailedmail"
ADDRESS = "ada@example.com"
DAY = 86_400
T = 1_767_225_600


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_each_notification_is_mailed_once_for_every_kind(
    database_url: str, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    settings = make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_SMTP_URL=f"smtp://127.0.0.1:{port}",
        LEDGER_MAIL_FROM="billing@example.com",
        LEDGER_RATE_LIMIT_PER_USER="100000/minute",  # the test polls
        LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
    )
    ticks = open_ledger(settings, pool_size=1)  # the log's clock, at the test's pace
    n = iter(range(1000))

    def send(client: TestClient, event_type: str, obj: dict[str, Any], at: int) -> None:
        deliver(client, f"evt_mail_{next(n)}", event_type, obj, at)

    def sub(status: str = "active", **kw: Any) -> dict[str, Any]:
        kw.setdefault("price_id", "price_lisa_premium_monthly")
        return so.subscription("sub_m", "cus_m", status=status, **kw)

    try:
        with TestClient(create_app(settings)) as client:
            token = client.post("/api/users", json={"user_id": USER}).json()["token"]
            headers = {"X-User-ID": USER, "Authorization": f"Bearer {token}"}

            def told() -> list[dict[str, Any]]:
                page = client.get("/api/v1/billing/notifications?limit=500", headers=headers)
                return page.json()["data"] or [{"kind": None}]

            send(client, "customer.created", so.customer("cus_m", user_id=USER, email=ADDRESS), T)
            send(client, "customer.created", so.customer("cus_other"), T)  # no user, no email
            trial = {"trial_end": T + 7 * DAY}
            send(client, "customer.subscription.created", sub("trialing", **trial), T + 1)
            send(client, "customer.subscription.trial_will_end", sub("trialing", **trial), T + 2)
            period = {"period_start": T + 7 * DAY, "period_end": T + 37 * DAY}
            send(client, "customer.subscription.updated", sub(**period), T + 7 * DAY)
            failed = so.invoice("in_m", "cus_m", "sub_m", status="open")
            send(client, "invoice.payment_failed", failed, T + 8 * DAY)
            send(client, "customer.subscription.updated", sub("past_due", **period), T + 8 * DAY)
            eventually(lambda: told()[-1]["kind"] == "payment_failed")  # then the clock goes
            assert ticks.tick(3600, now=T + 10 * DAY + 3600)  # the grace's last day
            assert ticks.tick(3600, now=T + 12 * DAY)  # after the grace
            send(client, "customer.subscription.updated", sub(**period), T + 13 * DAY)
            cancel = {"cancel_at_period_end": True, **period}
            send(client, "customer.subscription.updated", sub(**cancel), T + 14 * DAY)
            send(client, "customer.subscription.updated", sub(**period), T + 15 * DAY)
            pro = {"price_id": "price_professional_monthly", "amount": 4900, **period}
            send(client, "customer.subscription.updated", sub(**pro), T + 16 * DAY)
            ended = {"ended_at": T + 17 * DAY, **pro}
            send(client, "customer.subscription.deleted", sub("canceled", **ended), T + 17 * DAY)

            notifications = eventually(
                lambda: (
                    (d := told())
                    and [n["kind"] for n in d][-2:] == ["ended", "features_revoked"]
                    and d
                )
            )
            assert {n["kind"] for n in notifications} == set(KINDS)
            eventually(lambda: len(handler.messages) >= len(notifications))
            threading.Event().wait(0.5)  # and nothing more comes
    finally:
        ticks.close()

    assert len(handler.messages) == len(notifications)
    assert all(r == [ADDRESS] for r in handler.recipients)
    mailed = [m["X-Ledger-Notification"].split() for m in handler.messages]
    assert [(int(c), k) for c, k in mailed] == [(n["cursor"], n["kind"]) for n in notifications]
    for message in handler.messages:
        assert message["From"] == "billing@example.com" and message["To"] == ADDRESS
        assert message["Subject"] and "$" not in message.get_content()
    first = handler.messages[0]
    assert (first["Subject"], first.get_content().strip()) == (
        "Your subscription is active",
        "Your subscription (sub_m) is active (trialing) since 2026-01-01 00:00 UTC.",
    )


def test_every_kind_has_a_template_that_fills() -> None:
    row = {"cursor": 10, "stripe_subscription_id": "sub_1", "occurred_at": T, "detail": {}}
    for kind in (*KINDS, *(kind for kind, _ in ALERTS)):
        subject, body = render({**row, "kind": kind})
        assert subject and body.strip()


def test_usage_alerts_are_mailed_in_the_feeds_order(
    database_url: str, inbox: tuple[Inbox, int]
) -> None:
    """usage_totals' alerts join the notifications: one feed, in cursor order, for
    the page, the stream's fan-out and the outbox."""
    handler, port = inbox
    settings = make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_SMTP_URL=f"smtp://127.0.0.1:{port}",
        LEDGER_RATE_LIMIT_PER_USER="100000/minute",
        LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
    )
    with TestClient(create_app(settings)) as client:
        token = client.post("/api/users", json={"user_id": USER}).json()["token"]
        headers = {"X-User-ID": USER, "Authorization": f"Bearer {token}"}
        deliver(client, "evt_c", "customer.created", so.customer("cus_m", user_id=USER,
                                                                 email=ADDRESS), T)  # fmt: skip
        deliver(
            client, "evt_s", "customer.subscription.created",
            so.subscription("sub_m", "cus_m", price_id="price_lisa_premium_monthly"), T + 1,
        )  # fmt: skip

        def told() -> list[dict[str, Any]]:
            page = client.get("/api/v1/billing/notifications", headers=headers)
            return page.json()["data"]

        # stage two writes the subscription's events; usage is recorded at once
        eventually(lambda: [n["kind"] for n in told()] == ["activated", "features_granted"])
        # now is past that subscription's period: the calendar month, the free plan's 50
        for key, quantity in (("u1", 40), ("u2", 10)):
            record = {"metric": "ai_requests", "quantity": quantity, "idempotency_key": key}
            assert (
                client.post("/api/v1/billing/usage", json=record, headers=headers).status_code
                == 201
            )

        expected = ["activated", "features_granted", "usage_warning", "usage_limit_reached"]

        def all_told() -> list[dict[str, Any]] | None:
            found = told()
            return found if [n["kind"] for n in found] == expected else None

        notifications = eventually(all_told)
        cursors = [n["cursor"] for n in notifications]
        assert cursors == sorted(set(cursors))
        assert notifications[2] | {"cursor": 0, "at": 0} == {
            "cursor": 0, "at": 0, "kind": "usage_warning", "subscription_id": None,
            "metric": "ai_requests", "period_start": notifications[2]["period_start"],
            "total": 40, "included": 50,
        }  # fmt: skip
        eventually(lambda: len(handler.messages) >= 4)
        threading.Event().wait(0.3)  # and nothing more comes
    mailed = [m["X-Ledger-Notification"].split() for m in handler.messages]
    assert [(int(c), k) for c, k in mailed] == [(n["cursor"], n["kind"]) for n in notifications]
    assert handler.messages[2]["Subject"] == "You have used 80% of your ai_requests"
    assert "40 of the 50 ai_requests" in handler.messages[2].get_content()
