"""Each projection on SQLite and PostgreSQL: its rows, exactly once, rebuilt
equal to live, and "as of" equal to what the live projection said then."""

from __future__ import annotations

import functools
import gc
import itertools
import multiprocessing
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import collector
from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.usage import Usage
from ledger.domain.user import User
from ledger.plans import load_catalog
from ledger.stripe.payloads import read_delivery
from projections import read_side
from projections import rebuild as rebuild_module
from projections.as_of import replay_user
from projections.base import Held, Writer
from projections.read_side import ReadSide
from projections.rebuild import _copy, rebuild, rebuild_all, scratch, share
from projections.store import Cursor
from projections.subscription_status import SubscriptionStatusProjection
from scripts.cli import main
from scripts.projection_commands import _follow, _rebuild_group, _start
from tests import stripe_objects as so
from tests.streams import T0, webhook_streams
from tests.usage_streams import usage_records

USER = "user_1767225600_abcdefghij"
DAY = 86_400
T = 1_767_225_600
_prefixes = itertools.count()


@pytest.fixture
def read(ledger: Ledger, settings: Settings) -> Iterator[ReadSide]:
    side = ReadSide(ledger, load_catalog(), settings.database_url)
    try:
        yield side
    finally:
        side.close()


class Feed:
    """Deliver Stripe events through stage one and two, then catch projections up."""

    def __init__(self, ledger: Ledger, read: ReadSide) -> None:
        self.ledger, self.read = ledger, read
        self.n = itertools.count()

    def __call__(
        self, event_type: str, obj: dict[str, Any], created: int, catch_up: bool = True
    ) -> str:
        evt = f"evt_{next(self.n)}_{event_type.replace('.', '_')}"
        body = so.body_of(so.event(evt, event_type, obj, created=created))
        self.ledger.record([read_delivery(body)])
        if catch_up:
            self.ledger.process_new()
            self.read.catchup.run_once()
        return evt


@pytest.fixture
def feed(ledger: Ledger, read: ReadSide) -> Feed:
    return Feed(ledger, read)


def premium(status: str = "active", **kw: Any) -> dict[str, Any]:
    return so.subscription(
        "sub_1", "cus_1", status=status, price_id="price_lisa_premium_monthly", **kw
    )


def test_subscription_status_follows_a_life_with_payment_grace(feed: Feed, read: ReadSide) -> None:
    assert read.status(USER) == {"active": False, "tier": "free"}
    feed("customer.created", so.customer("cus_1", user_id=USER), T)
    feed("customer.subscription.created", premium("trialing", trial_end=T + 14 * DAY), T + 1)
    status = read.status(USER, now=T + 2)
    assert status == {
        "active": True, "id": "sub_1", "status": "trialing",
        "plan_name": "LISA Premium - Monthly", "amount": 999, "interval": "month",
        "current_period_start": 1_767_225_600, "current_period_end": 1_769_904_000,
        "cancel_at_period_end": False, "currency": "usd", "tier": "premium",
        "trial_end": T + 14 * DAY, "position": status["position"],
    }  # fmt: skip
    feed(
        "invoice.payment_failed", so.invoice("in_1", "cus_1", "sub_1", status="open"), T + 10 * DAY
    )
    feed("customer.subscription.updated", premium("past_due"), T + 10 * DAY + 5)
    # LISA Premium's grace is 3 days, counted from the failed payment.
    assert read.status(USER, now=T + 12 * DAY)["active"] is True
    assert read.status(USER, now=T + 13 * DAY + 1) | {"position": 0} == status | {
        "active": False,
        "status": "past_due",
        "tier": "free",
        "trial_end": None,
        "position": 0,
    }
    feed("customer.subscription.updated", premium(cancel_at_period_end=True), T + 11 * DAY)
    recovered = read.status(USER, now=T + 30 * DAY)
    assert (recovered["active"], recovered["cancel_at_period_end"]) == (True, True)
    feed("customer.subscription.deleted", premium("canceled", ended_at=T + 31 * DAY), T + 31 * DAY)
    ended = read.status(USER, now=T + 31 * DAY)
    assert (ended["active"], ended["status"], ended["tier"]) == (False, "canceled", "free")


def test_a_price_in_no_plan_is_active_with_the_fallback_tier(feed: Feed, read: ReadSide) -> None:
    feed(
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", price_id="price_unknown", user_id=USER),
        T,
    )
    status = read.status(USER, now=T)
    assert (status["active"], status["tier"], status["amount"]) == (True, "premium", 999)


def test_a_price_is_found_by_lookup_key_too(feed: Feed, read: ReadSide) -> None:
    feed(
        "customer.subscription.created",
        so.subscription(
            "sub_1",
            "cus_1",
            price_id="price_renamed",
            amount=4900,
            lookup_key="professional_monthly",
            user_id=USER,
        ),
        T,
    )
    assert read.status(USER, now=T)["plan_name"] == "Professional - Monthly"
    assert read.entitlements(USER, now=T)["tier"] == "professional"


def test_entitlements_follow_the_current_plan(feed: Feed, read: ReadSide) -> None:
    assert read.entitlements(USER) == {
        "tier": "free",
        "plan_id": "free",
        "features": ["status_check"],
        "limits": {"saved_items": 10},
    }
    feed(
        "customer.subscription.created",
        so.subscription(
            "sub_1", "cus_1", price_id="price_starter_monthly", amount=1900, user_id=USER
        ),
        T,
    )
    assert read.entitlements(USER, now=T)["features"] == ["status_check", "api_access"]
    feed(
        "customer.subscription.updated",
        so.subscription(
            "sub_1",
            "cus_1",
            price_id="price_professional_yearly",
            amount=49000,
            interval="year",
            user_id=USER,
        ),
        T + 1,
    )
    assert read.entitlements(USER, now=T + 1)["limits"] == {
        "api_calls_per_month": 100000,
        "seats": 10,
    }
    feed(
        "customer.subscription.deleted",
        so.subscription("sub_1", "cus_1", status="canceled", user_id=USER),
        T + 2,
    )
    assert read.entitlements(USER, now=T + 2)["tier"] == "free"


def test_entitlements_and_get_subscription_agree_on_the_payment_grace(
    feed: Feed, read: ReadSide
) -> None:
    """Grace counts from the failed payment, even when Stripe says past_due a day
    later; both answers must flip to free at the same moment."""
    feed("customer.subscription.created", premium(user_id=USER), T)
    feed("invoice.payment_failed", so.invoice("in_1", "cus_1", "sub_1", status="open"), T + DAY)
    feed("customer.subscription.updated", premium("past_due", user_id=USER), T + 2 * DAY)
    for now, tier in ((T + 4 * DAY - 1, "premium"), (T + 4 * DAY + 1, "free")):
        assert read.status(USER, now=now)["tier"] == tier
        assert read.entitlements(USER, now=now)["tier"] == tier


def test_invoice_history_is_attributed_once_the_customer_is_linked(
    feed: Feed, read: ReadSide
) -> None:
    feed("invoice.paid", so.invoice("in_1", "cus_1", "sub_1", amount=999), T)
    assert read.invoices(USER) == []
    feed("customer.updated", so.customer("cus_1", user_id=USER), T + 1)
    feed(
        "invoice.payment_failed",
        so.invoice(
            "in_2", "cus_1", "sub_1", status="open", attempt_count=2, period_start=T + 31 * DAY
        ),
        T + 31 * DAY,
    )
    rows = read.invoices(USER)
    assert [
        (r["stripe_invoice_id"], r["status"], r["amount_due"], r["amount_paid"]) for r in rows
    ] == [("in_2", "payment_failed", 999, 0), ("in_1", "paid", 999, 999)]
    assert (rows[0]["attempt_count"], rows[0]["failed_at"], rows[1]["paid_at"]) == (
        2,
        T + 31 * DAY,
        T,
    )
    assert rows[1]["currency"] == "usd" and rows[1]["stripe_subscription_id"] == "sub_1"


def test_customers_serve_the_billing_api_and_reconcile_alike(feed: Feed, read: ReadSide) -> None:
    """One `customers` projection: the user's own record of creating a customer
    answers the billing API at once, but reconcile holds only what the log has
    as a `Customer` (so that one is still `missing` to it) until its webhook."""
    user = User(user_id=USER, token_hash="h")
    user.customer_created("cus_1")
    feed.ledger.save(user)
    read.catchup.run_once()
    assert read.customer(USER) == {"customer_id": "cus_1", "email": None, "name": None}
    assert read.held_customers() == {}

    feed("customer.created", so.customer("cus_1", email="a@example.com", name="Ada"), T)
    assert read.held_customers() == {"cus_1": {"email": "a@example.com", "user_id": None}}
    assert read.customer(USER) == {"customer_id": "cus_1", "email": "a@example.com", "name": "Ada"}

    feed("customer.updated", so.customer("cus_1", email="b@example.com", user_id=USER), T + 1)
    assert read.held_customers() == {"cus_1": {"email": "b@example.com", "user_id": USER}}
    assert read.customer(USER) == {"customer_id": "cus_1", "email": "b@example.com", "name": None}


@pytest.mark.parametrize("batches", ["one an event", "one for all"])
def test_notifications_tell_each_change_with_an_increasing_cursor(
    ledger: Ledger, read: ReadSide, batches: str
) -> None:
    """Also with every event in one batch (a rebuild's window): the end's withdrawal
    of the cancellation, saved with it, is no notification either way."""
    feed = functools.partial(Feed(ledger, read), catch_up=batches == "one an event")
    feed("customer.subscription.created", premium("trialing", trial_end=T + 3 * DAY), T)
    feed("customer.subscription.trial_will_end", premium("trialing", trial_end=T + 3 * DAY), T + 1)
    feed("customer.created", so.customer("cus_1", user_id=USER), T + 2)  # linked late
    feed("customer.subscription.updated", premium("active"), T + 3 * DAY)
    feed(
        "customer.subscription.updated",
        premium("past_due", period_start=1_769_904_000, period_end=1_772_582_400),
        T + 4 * DAY,
    )
    feed(
        "customer.subscription.updated",
        premium("active", period_start=1_769_904_000, period_end=1_772_582_400),
        T + 5 * DAY,
    )
    feed(
        "customer.subscription.updated",
        premium(
            "active",
            period_start=1_769_904_000,
            period_end=1_772_582_400,
            cancel_at_period_end=True,
        ),
        T + 6 * DAY,
    )
    feed("customer.subscription.deleted", premium("canceled", ended_at=T + 7 * DAY), T + 7 * DAY)
    ledger.process_new()
    read.catchup.run_once()
    rows = read.notifications(USER)
    assert [r["kind"] for r in rows] == [
        "activated",
        "features_granted",
        "trial_ending",
        "renewed",
        "payment_failed",
        "payment_recovered",
        "cancellation_scheduled",
        "ended",
        "features_revoked",
    ]
    cursors = [r["cursor"] for r in rows]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert [r["kind"] for r in read.notifications(USER, after=cursors[4])] == [
        "payment_recovered",
        "cancellation_scheduled",
        "ended",
        "features_revoked",
    ]


def test_the_logs_clock_warns_before_a_grace_ends_and_revokes_after(
    feed: Feed, read: ReadSide, ledger: Ledger
) -> None:
    """payment_grace_ending and the revocation come from clock ticks in the log, so
    a restart forgets nothing and a rebuild writes them again at the same cursors."""
    feed("customer.created", so.customer("cus_1", user_id=USER), T)
    feed("customer.subscription.created", premium(), T)
    feed("invoice.payment_failed", so.invoice("in_1", "cus_1", "sub_1", status="open"), T + 1)
    feed("customer.subscription.updated", premium("past_due"), T + 2)
    ends = T + 1 + 3 * DAY  # LISA Premium: 3 days from the first failed payment

    def tick(at: int) -> list[str]:
        assert ledger.tick(3600, now=at)
        read.catchup.run_once()
        return [n["kind"] for n in read.notifications(USER)][3:]

    assert tick(T + DAY) == []
    assert tick(T + 2 * DAY) == []  # 00:00 of day 2 is before the last day begins
    assert tick(T + 2 * DAY + 3600) == ["payment_grace_ending"]
    assert tick(T + 2 * DAY + 7200) == ["payment_grace_ending"]  # told once
    assert tick(ends + 3600) == ["payment_grace_ending", "features_revoked"]
    assert not ledger.tick(3600, now=ends + 3700)  # the same period: one tick in the log
    feed("customer.subscription.updated", premium("active"), ends + 4000)
    rows = read.notifications(USER)
    assert [n["kind"] for n in rows] == [
        "activated", "features_granted", "payment_failed", "payment_grace_ending",
        "features_revoked", "payment_recovered", "features_granted",
    ]  # fmt: skip
    assert rows[3]["detail"] == {"grace_ends_at": ends}
    assert rows[3]["occurred_at"] == T + 2 * DAY + 3600
    granted = ["premium_features", "priority_support"]
    assert rows[4]["detail"] == {"features": granted, "reason": "grace_ended"}
    assert rows[1]["detail"] == rows[6]["detail"] == {"features": granted}
    notifications = next(p for p in read.projections if p.name == "notifications")
    rebuild(read.catchup, notifications)
    assert read.notifications(USER) == rows


def test_webhook_health_counts_types_and_outcomes(
    feed: Feed, read: ReadSide, ledger: Ledger, poisoned: dict[str, bool]
) -> None:
    feed("customer.subscription.created", premium(), T)
    feed("customer.subscription.created", premium("trialing"), T - 1)  # older: superseded
    feed("charge.refunded", {"id": "ch_1"}, T)
    poisoned["evt_3_customer_subscription_created"] = True
    ledger.retry_attempts = 1
    feed("customer.subscription.created", so.subscription("sub_9", "cus_9"), T)
    report = read.webhook_health()
    assert report["by_type"] == {
        "charge.refunded": {"ignored": 1},
        "customer.subscription.created": {"applied": 1, "superseded": 1, "dead": 1},
    }
    assert [d["stripe_event_id"] for d in report["dead"]] == ["evt_3_customer_subscription_created"]
    assert report["lag"] == 0 and report["last_received_at"] > 0


def _receipts(snapshot_: dict[str, list[tuple[Any, ...]]]) -> dict[str, dict[str, Any]]:
    """A snapshot's webhook receipts by Stripe event id."""
    return {dict(r)["stripe_event_id"]: dict(r) for r in snapshot_["webhook_receipts"]}


def _rebuilt(read: ReadSide, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection's rows after the named one is rebuilt one event at a time
    (a window of one: a projection that takes a batch at once gets one event)."""
    rebuild(read.catchup, next(p for p in read.projections if p.name == name), batch_size=1)
    return snapshot(read)


def test_webhook_health_takes_a_batch_at_once_with_the_rows_of_one_by_one(
    feed: Feed, read: ReadSide, ledger: Ledger, poisoned: dict[str, bool]
) -> None:
    """Live, the receipts a batch receives are inserted together at its end with
    what stage two did to them meanwhile; a rebuild a window of one event at a
    time applies each event alone: the same rows either way (outcome, attempts, error, position)."""
    feed("charge.refunded", {"id": "ch_0"}, T, catch_up=False)
    read.catchup.run_once()  # received in one batch, processed in the next
    poisoned["evt_2_customer_subscription_created"] = True
    ledger.retry_attempts = 1
    feed("customer.subscription.created", premium(), T, catch_up=False)
    feed("customer.subscription.created", so.subscription("sub_9", "cus_9"), T, catch_up=False)
    feed("charge.refunded", {"id": "ch_3"}, T, catch_up=False)
    ledger.process_new()
    feed("charge.refunded", {"id": "ch_4"}, T, catch_up=False)  # received, not processed
    read.catchup.run_once()  # one batch: received, processed, failed, dead
    live = snapshot(read)
    by_event = _receipts(live)
    assert {e: (r["outcome"], r["attempts"]) for e, r in by_event.items()} == {
        "evt_0_charge_refunded": ("ignored", "0"),
        "evt_1_customer_subscription_created": ("applied", "0"),
        "evt_2_customer_subscription_created": ("dead", "1"),
        "evt_3_charge_refunded": ("ignored", "0"),
        "evt_4_charge_refunded": ("received", "0"),
    }
    assert "bug while handling" in by_event["evt_2_customer_subscription_created"]["last_error"]

    assert _rebuilt(read, "webhook_health") == live  # one event at a time


def test_webhook_health_changes_receipts_of_earlier_batches_as_one_by_one(
    feed: Feed, read: ReadSide, ledger: Ledger, poisoned: dict[str, bool]
) -> None:
    """Receipts received in an earlier batch are changed together at a batch's end,
    each by all that the batch did to it: a failure then death keeps the failure's
    attempts and error; a failure then success keeps them and says applied; a
    failure in one batch and death in the next keeps the first batch's error."""
    ledger.retry_attempts, ledger.retry_base_seconds = 3, 0
    for n in range(4):
        poisoned[f"evt_{n}_customer_subscription_created"] = n != 3
        feed("customer.subscription.created", so.subscription(f"sub_{n}", f"cus_{n}"), T, False)
    read.catchup.run_once()  # all four received, in their own batch
    ledger.process_new()  # attempt 1: three fail, evt_3 is applied
    read.catchup.run_once()
    ledger.retry_due()  # attempt 2: all three fail again
    poisoned["evt_1_customer_subscription_created"] = False
    ledger.retry_due()  # attempt 3: evt_1 applied, evt_0 and evt_2 dead
    poisoned["evt_2_customer_subscription_created"] = False
    read.catchup.run_once()  # one batch: failed, failed again, applied or dead
    live = snapshot(read)
    by_event = _receipts(live)
    assert {e: (r["outcome"], r["attempts"]) for e, r in by_event.items()} == {
        "evt_0_customer_subscription_created": ("dead", "3"),
        "evt_1_customer_subscription_created": ("applied", "2"),
        "evt_2_customer_subscription_created": ("dead", "3"),
        "evt_3_customer_subscription_created": ("applied", "0"),
    }
    applied_late = by_event["evt_1_customer_subscription_created"]
    assert "bug while handling evt_1" in applied_late["last_error"]
    assert by_event["evt_3_customer_subscription_created"]["last_error"] == "None"

    assert _rebuilt(read, "webhook_health") == live  # one event at a time


def test_rows_inserted_later_are_there_for_the_next_statement_on_their_table(
    read: ReadSide,
) -> None:
    """`Writer.insert_later` holds rows until a statement names their table, or
    the batch ends; then they go in one statement, conflicts skipped as asked."""
    names = {t: f"later_{t}_{next(_prefixes)}" for t in ("a", "b")}
    types = {"k": "text", "n": "bigint"}
    with read.store.transaction(pipeline=False) as c:
        for name in names.values():
            c.execute(f"CREATE TABLE {name} (k TEXT PRIMARY KEY, n BIGINT)")
    try:
        with read.store.transaction() as c:
            w = Writer(c, names, {t: types for t in names})
            for n in range(3):
                w.insert_later("a", {"k": f"a{n}", "n": n}, "ON CONFLICT DO NOTHING")
            w.insert_later("a", {"k": "a0", "n": 99}, "ON CONFLICT DO NOTHING")
            w.insert_later("b", {"k": "b0", "n": None})
            seen = w.query("SELECT k, n FROM {a} ORDER BY k")
            held = c.query(f"SELECT COUNT(*) AS n FROM {names['b']}")[0]["n"]
            w.flush()
            after = c.query(f"SELECT k, n FROM {names['b']}")
        assert [(r["k"], r["n"]) for r in seen] == [("a0", 0), ("a1", 1), ("a2", 2)]
        assert held == 0
        assert [(r["k"], r["n"]) for r in after] == [("b0", None)]
    finally:
        with read.store.transaction(pipeline=False) as c:
            for name in names.values():
                c.execute(f"DROP TABLE {name}")


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement a projection reads its own tables with (`Writer.query`)."""
    statements: list[str] = []
    query = Writer.query

    def spy(w: Writer, statement: str, **params: Any) -> list[dict[str, Any]]:
        statements.append(statement)
        return query(w, statement, **params)

    monkeypatch.setattr(Writer, "query", spy)
    return statements


def test_usage_totals_asks_once_a_batch_whether_its_users_have_usage_records(
    feed: Feed, read: ReadSide, ledger: Ledger, asked: list[str]
) -> None:
    """A batch of subscription events of users without usage records reads
    `usage_records` once (`_learn`), not once an event; with a record, the totals."""
    for i in range(6):
        sub = so.subscription(f"sub_{i}", f"cus_{i}", user_id=f"{USER[:-1]}{i}")
        feed("customer.subscription.created", sub, T + i, catch_up=False)
        feed("customer.subscription.updated", {**sub, "status": "past_due"}, T + i, False)
    ledger.process_new()
    read.catchup.run_once()
    assert sum("{usage_records}" in q for q in asked) == 1
    ledger.record([Usage(USER, "ai_requests", 2, "k1", T + 9)])
    feed("customer.subscription.created", so.subscription("sub_u", "cus_u", user_id=USER), T + 9)
    assert read.usage(USER, at=T + 9)["metrics"]["ai_requests"]["total"] == 2


def test_a_failed_payment_finds_its_subscription_without_writing_the_held_invoices_first(
    feed: Feed, read: ReadSide, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """subscription_status and notifications each keep invoice -> subscription
    rows, held to the batch's end (`insert_later`). A failed payment of an invoice
    the same batch recorded finds its subscription from the batch's note
    instead of naming that table, which (on PostgreSQL) writes what is held first:
    one insert of them a batch, not one a failure. A failure of an invoice of an
    earlier batch reads the table. Either way the grace counts from the first
    failure, and a rebuild writes the same rows."""
    inserts: list[str] = []
    insert_rows = Writer.insert_rows

    def spy(w: Writer, table: str, rows: Any, conflict: str = "") -> None:
        inserts.append(table)
        insert_rows(w, table, rows, conflict)

    monkeypatch.setattr(Writer, "insert_rows", spy)
    for i in range(4):
        feed("customer.subscription.created", so.subscription(f"sub_{i}", f"cus_{i}"), T, False)
        failed = so.invoice(f"in_{i}", f"cus_{i}", f"sub_{i}", status="open")
        feed("invoice.payment_failed", failed, T + 10 + i, catch_up=False)
    ledger.process_new()
    read.catchup.run_once()  # one batch
    if read.store.is_postgres:
        assert inserts.count("subscription_invoices") == 1
        assert inserts.count("notification_invoices") == 1

    def since() -> dict[str, list[int | None]]:
        with read.store.reading() as c:
            return {
                table: [
                    r["past_due_since"]
                    for r in c.query(
                        f"SELECT past_due_since FROM {table} ORDER BY stripe_subscription_id"
                    )
                ]
                for table in ("subscription_status", "notification_subscriptions")
            }

    assert set(map(tuple, since().values())) == {(T + 10, T + 11, T + 12, T + 13)}
    # sub_0 recovers, then its invoice of the first batch fails again: read from the table
    past_due = so.subscription("sub_0", "cus_0", status="past_due")
    feed("customer.subscription.updated", past_due, T + 15)
    feed("customer.subscription.updated", so.subscription("sub_0", "cus_0"), T + 20)
    assert [held[0] for held in since().values()] == [None, None]
    again = so.invoice("in_0", "cus_0", "sub_0", status="open", attempt_count=2)
    feed("invoice.payment_failed", again, T + 30)
    assert set(map(tuple, since().values())) == {(T + 30, T + 11, T + 12, T + 13)}
    live = snapshot(read)
    for name in ("subscription_status", "notifications"):
        rebuild(read.catchup, next(p for p in read.projections if p.name == name))
    assert snapshot(read) == live


def test_a_read_of_the_positions_made_while_the_runner_applied_is_not_shared(
    read: ReadSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchers share one read of the projections' positions for a moment
    (`read_side.SHARED`, here an hour). When this process's runner applies events
    while such a read is under way, the read is not shared: it may be from before
    the commit (the same rule as a commit the store tells of)."""
    monkeypatch.setattr(read_side, "SHARED", 3600.0)
    reads = 0
    positions = read.store.positions

    def during_a_commit(keys: Any) -> dict[str, int]:
        nonlocal reads
        reads += 1
        found = positions(keys)
        if reads == 1:
            read._moved()  # the runner applied events while the positions were read
        return found

    monkeypatch.setattr(read.store, "positions", during_a_commit)
    read.tracked()
    read.tracked()
    assert reads == 2
    read.tracked()
    assert reads == 2  # shared, once no commit came in between


FOLDED = (  # the tables of the projections that fold a batch in memory
    "notifications", "notification_subscriptions", "notification_contacts",
    "subscription_status", "entitlements", "customers", "invoice_customers", "invoice_history",
    "pending_changes",
)  # fmt: skip


def test_the_projections_fold_a_batch_in_a_few_statements_whatever_its_size(
    feed: Feed, read: ReadSide, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """notifications, subscription_status, entitlements, customers,
    invoice_history and pending_changes hold a batch's rows in memory: the rows
    it changes read in one query a table, then written back in one statement a
    table, however many events the batch has (one or more statements an event
    before). A customer's link to its user also names the invoices written
    before. What they write is what events applied one at a time write (a
    rebuild one log event a window), and what each user reads."""
    named: Counter[str] = Counter()
    for method in ("execute", "execute_many", "query"):
        original = getattr(Cursor, method)

        def spy(c: Any, statement: str, *args: Any, _original: Any = original) -> Any:
            named.update(t for t in re.findall(r"\b(\w+)_g\d+\b", statement) if t in FOLDED)
            return _original(c, statement, *args)

        monkeypatch.setattr(Cursor, method, spy)
    # an invoice before its customer: the link names it in the table
    feed("invoice.paid", so.invoice("in_0z", "cus_0", "sub_0", status="paid"), T)
    named.clear()
    users = [f"{USER[:-2]}{i:02d}" for i in range(8)]
    for i, user in enumerate(users):
        sub, cus = f"sub_{i}", f"cus_{i}"
        feed("customer.created", so.customer(cus, user_id=user, email=f"{i}@ex.com"), T, False)
        monthly, annual = "price_lisa_premium_monthly", "price_lisa_premium_annual"
        steps = [
            ("customer.subscription.created", so.subscription(sub, cus, price_id=monthly)),
            ("invoice.paid", so.invoice(f"in_{i}a", cus, sub, status="paid")),
            (
                "customer.subscription.updated",
                so.subscription(sub, cus, status="past_due", price_id=annual),
            ),
            ("invoice.payment_failed", so.invoice(f"in_{i}b", cus, sub, status="open")),
            ("customer.subscription.updated", so.subscription(sub, cus, price_id=annual)),
        ]
        for n, (kind, obj) in enumerate(steps, 1):
            feed(kind, obj, T + n, catch_up=False)
    ledger.process_new()
    read.catchup.run_once()  # one batch
    links = len(users)  # invoice_history: one UPDATE a customer linked
    assert all(named[t] <= 2 + links * (t == "invoice_history") for t in FOLDED), named
    assert sum(named.values()) <= 2 * len(FOLDED) + links, named  # 332 before
    kinds = [n["kind"] for n in read.notifications(users[3])]
    assert kinds == [
        "activated", "features_granted", "plan_changed", "payment_failed", "payment_recovered"
    ]  # fmt: skip
    assert sorted(i["stripe_invoice_id"] for i in read.invoices(users[0])) == [
        "in_0a", "in_0b", "in_0z"
    ]  # fmt: skip
    assert read.status(users[5])["status"] == "active"
    assert read.customer(users[5])["email"] == "5@ex.com"  # type: ignore[index]
    live = snapshot(read)
    rebuild_all(read.catchup, read.projections, batch_size=1)
    assert snapshot(read) == live


def test_held_rows_refuse_a_change_never_loaded_and_delete_what_they_did_not_read() -> None:
    """A handler's change of a row its batch never loaded would be lost without a
    word: it raises instead. A row dropped without being read is still deleted."""
    held = Held(SubscriptionStatusProjection, "subscription_status", "subscription_id")
    held.rows["known"] = None  # loaded: no row
    assert held.change("known", status="active") is None
    with pytest.raises(KeyError):
        held.change("never_loaded", status="active")
    held.drop("known")  # known to have none: nothing to delete
    held.drop("never_read")
    assert list(held.dropped) == ["never_read"]


def test_two_runners_apply_each_event_once(
    ledger: Ledger, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    import projections.base as base
    from projections.store import ViewStore

    # (projection, event position) per committed batch: what apply_many_in did inside
    # a transaction counts once that transaction has committed
    committed: list[tuple[str, int]] = []
    pending = threading.local()
    apply_many_in, transaction = base.apply_many_in, ViewStore.transaction

    def recording_apply(c, shares, position):  # type: ignore[no-untyped-def]
        apply_many_in(c, shares, position)
        for projection, events, _ in shares:
            pending.batch.extend((projection.name, i) for i, _ in events)

    @contextlib.contextmanager
    def recording_transaction(self, **kwargs):  # type: ignore[no-untyped-def]
        pending.batch = []
        with transaction(self, **kwargs) as c:
            yield c
        committed.extend(pending.batch)

    monkeypatch.setattr(base, "apply_many_in", recording_apply)
    monkeypatch.setattr("projections.runner.apply_many_in", recording_apply)
    monkeypatch.setattr(ViewStore, "transaction", recording_transaction)
    feed_only = Feed(ledger, None)  # type: ignore[arg-type]
    for i in range(30):
        feed_only(
            "customer.subscription.created",
            so.subscription(f"sub_{i}", "cus_1", user_id=USER),
            T + i,
            catch_up=False,
        )
        feed_only(
            "customer.subscription.updated",
            so.subscription(f"sub_{i}", "cus_1", status="past_due", user_id=USER),
            T + 100 + i,
            catch_up=False,
        )
    ledger.process_new()
    sides = [ReadSide(ledger, load_catalog(), settings.database_url) for _ in range(3)]
    for side in sides:
        side.catchup.batch_size = 7
    try:
        threads = [
            threading.Thread(target=lambda s=s: [s.catchup.run_once() for _ in range(5)])
            for s in sides
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sides[0].catchup.run_once()
        assert len(committed) == len(set(committed)) > 0  # no event in two committed batches
        # 30 activated, 30 features_granted, 30 payment_failed
        assert len(sides[0].notifications(USER)) == 90
        assert all(p["lag"] == 0 for p in sides[0].positions())
    finally:
        for side in sides:
            side.close()


def snapshot(read: ReadSide) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection, in a comparable form."""
    tables = [t for p in read.projections for t in p.tables]
    out = {}
    with read.store.transaction(commit=False) as c:
        for table in tables:
            rows = c.query(f"SELECT * FROM {table}")
            out[table] = sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
    return out


@settings(max_examples=8)
@given(st.data())
def test_a_rebuilt_projection_equals_the_live_one(
    ledger: Ledger, read: ReadSide, data: st.DataObject
) -> None:
    prefix = f"r{next(_prefixes)}_"
    stream: list[Any] = [read_delivery(d.body) for d in data.draw(webhook_streams(prefix=prefix))]
    users = [f"user_{T0}_{prefix}{n:0>9}"[:27] for n in range(3)]  # the streams' users
    for record in {r.aggregate_id: r for r in data.draw(usage_records(users))}.values():
        stream.insert(data.draw(st.integers(0, len(stream))), record)  # usage among webhooks
    cut = data.draw(st.integers(0, len(stream)))
    for i, item in enumerate(stream):  # live: catching up in uneven steps
        ledger.record([item])
        if i in (cut, len(stream) - 1):
            ledger.process_new()
            read.catchup.run_once()
    # the log's clock goes on: days pass (payment graces end), caught up now and then
    for day in sorted(data.draw(st.lists(st.integers(1, 20), max_size=6, unique=True))):
        ledger.tick(3600, now=T + day * DAY)
        if data.draw(st.booleans()):
            read.catchup.run_once()
    read.catchup.run_once()
    live = snapshot(read)
    assert any(live.values())
    for projection in read.projections:
        rebuild(read.catchup, projection, batch_size=3)
    assert snapshot(read) == live
    rebuild_all(read.catchup, read.projections, batch_size=3)  # all of them in one pass
    assert snapshot(read) == live


def test_a_rebuild_shared_out_between_processes_equals_the_live_one(
    cli_env: pytest.MonkeyPatch,
    feed: Feed,
    read: ReadSide,
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ledger projections rebuild --jobs 2`: two processes, each with its share of
    the projections, and every projection's rows as the live ones, in a new
    generation."""
    for i in range(6):
        feed(
            "customer.subscription.created",
            so.subscription(f"sub_{i}", "cus_1", user_id=USER),
            T + i,
        )
        feed("invoice.paid", so.invoice(f"in_{i}", "cus_1", f"sub_{i}", status="paid"), T + i)
    ledger.record([Usage(USER, "ai_requests", 1, f"k{i}", T + i) for i in range(5)])
    read.catchup.run_once()
    live = snapshot(read)
    generations = {row["name"]: row["generation"] for row in read.positions()}

    assert main(["projections", "rebuild", "--jobs", "2"]) == 0

    err = capsys.readouterr().err
    assert "2 processes read" in err and err.count("swapped in") == len(read.projections)
    assert snapshot(read) == live
    after = {row["name"]: row["generation"] for row in read.positions()}
    assert all(after[name] == generations[name] + 1 for name in generations)
    with read.store.transaction(commit=False) as c:  # those the scratch went without too
        present = read.store.index_names(c)
    for projection in read.projections:
        assert set(projection.index_names(after[projection.name])) <= present, projection.name


def test_rebuild_processes_are_forked_on_postgres_and_spawned_on_sqlite(
    cli_env: pytest.MonkeyPatch, read: ReadSide
) -> None:
    """Forked, a process starts with the modules loaded; on SQLite it is spawned
    (a forked one would start with a copy of the parent's locks on the file)."""
    methods: list[str | None] = []
    get_context = multiprocessing.get_context

    def recorded(method: str | None = None) -> Any:
        methods.append(method)
        return get_context(method)

    cli_env.setattr(multiprocessing, "get_context", recorded)
    assert main(["projections", "rebuild", "--jobs", "2"]) == 0
    assert methods == ["fork" if read.store.is_postgres else "spawn"]


@pytest.mark.parametrize("schema_change", [True, False], ids=["schema-change", "plain"])
def test_a_schema_change_takes_the_write_lock_before_it_reads(
    read: ReadSide, schema_change: bool
) -> None:
    """A transaction on SQLite that reads first (a `DROP ... IF EXISTS` of nothing)
    and then writes fails at once with "database is locked" when another process
    wrote in between (WAL's stale snapshot): two rebuild processes of an empty log
    did. A schema change (`pipeline=False`) takes the lock before anything else:
    the other writer waits (here: gives up after its timeout). PostgreSQL has no
    such snapshot."""
    store = read.store
    other: list[str] = []
    if not store.is_postgres:
        with store.reading() as r:
            path = r.query("PRAGMA database_list")[0]["file"]

    def other_process_writes() -> None:  # a connection of its own, as another process has
        if store.is_postgres:
            return
        conn = sqlite3.connect(path, timeout=0.2)
        try:
            conn.execute("CREATE TABLE other_writers (x INTEGER)")
            other.append("created")
        except sqlite3.OperationalError as exc:
            other.append(str(exc))
        finally:
            conn.close()

    outcome = "created"
    try:
        with store.transaction(pipeline=not schema_change) as c:
            c.execute("DROP TABLE IF EXISTS nothing_here")
            other_process_writes()
            c.execute("CREATE TABLE mine (x INTEGER)")
    except OperationalError as exc:
        outcome = str(exc)

    if store.is_postgres:
        assert outcome == "created"
    elif schema_change:
        assert (outcome, other) == ("created", ["database is locked"])
    else:
        assert (outcome, other) == ("database is locked", ["created"])


def test_a_failed_rebuild_process_is_named_with_its_projections_and_the_others_land(
    cli_env: pytest.MonkeyPatch, read: ReadSide
) -> None:
    """What `--jobs` reports when one of its processes fails (here it holds a name
    no process can open): the projections it held, named; the other process's
    rebuilt and swapped in."""
    health = next(p for p in read.projections if p.name == "webhook_health")
    before = read.catchup.generation(health)
    held = SimpleNamespace(name="no_such_projection")

    forked = read.store.is_postgres  # as the command does
    groups: Any = [[health], [held]]
    applied, failures = _follow(_start(groups, forked), groups, lambda *_: None)

    assert list(applied) == ["webhook_health"]
    assert len(failures) == 1 and failures[0].startswith("no_such_projection: KeyError")
    assert read.catchup.generation(health) == before + 1


def test_a_rebuild_process_tunes_its_collector_and_folds_with_the_heap_frozen(
    cli_env: pytest.MonkeyPatch, read: ReadSide, feed: Feed
) -> None:
    """A rebuild's process is spawned (it runs no `main`): it sets the collector's
    first threshold as every ledger process does, and its fold leaves what was
    alive before it out of the collector's scans, until the fold ends."""
    feed("customer.subscription.created", so.subscription("sub_1", "cus_1", user_id=USER), T)
    seen: list[tuple[int, int]] = []
    fold = rebuild_module._share

    def watched(*args: Any) -> None:
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
        fold(*args)

    cli_env.setattr(rebuild_module, "_share", watched)
    reports: Any = SimpleNamespace(items=[], put=lambda item: reports.items.append(item))
    thresholds = gc.get_threshold()
    gc.set_threshold(700, *thresholds[1:])
    try:
        _rebuild_group(0, ["subscription_status"], reports)
        after = gc.get_freeze_count()
    finally:
        gc.set_threshold(*thresholds)

    assert reports.items[-1][0] == "done"
    assert seen and all(young == collector.YOUNG and frozen > 0 for young, frozen in seen)
    assert after == 0


def test_a_rebuild_hands_a_projection_that_takes_batches_each_window_at_once(
    monkeypatch: pytest.MonkeyPatch, read: ReadSide, feed: Feed
) -> None:
    """usage_totals learns in two queries a batch which users have usage records
    (its `apply_all`, as the live runner calls it): a rebuild hands it each window
    of the log at once, so its subscriptions' events ask nothing each, and the
    rows are those of the live path."""
    for n in range(6):
        feed("customer.subscription.created", so.subscription(f"sub_{n}", f"cus_{n}"), T)
    live = snapshot(read)
    asked: list[str] = []
    query = rebuild_module._ScratchCursor.query

    def counted(self: Any, statement: str, params: Any = None) -> list[dict[str, Any]]:
        asked.append(statement)
        return query(self, statement, params)

    monkeypatch.setattr(rebuild_module._ScratchCursor, "query", counted)
    usage = next(p for p in read.projections if p.name == "usage_totals")
    rebuild(read.catchup, usage)  # one window
    assert snapshot(read) == live
    assert 0 < len(asked) <= 2, asked  # one an event before (six)


def test_the_projections_are_shared_out_by_the_events_they_apply() -> None:
    def projection(name: str, *topics: str, cost: float = 1.0) -> Any:
        return SimpleNamespace(name=name, topics=topics, rebuild_cost=cost)

    heavy, a, b, c = (
        projection("heavy", "t1", "t2"),
        projection("a", "t2"),
        projection("b", "t3"),
        projection("c", "t4"),
    )
    counts = {"t1": 900, "t2": 100, "t3": 300, "t4": 200}
    # heavy 1,000 alone; a 100 + b 300 + c 200 together, in their order
    assert share([a, heavy, b, c], counts, 2) == [[heavy], [a, b, c]]
    assert share([a, heavy, b, c], counts, 1) == [[a, heavy, b, c]]
    assert share([a], counts, 4) == [[a]]  # never an empty group
    assert sorted(len(g) for g in share([a, b, c, heavy], {}, 3)) == [1, 1, 2]
    costly = projection("costly", "t3", cost=4.0)  # 1,200: heavier than heavy
    assert share([heavy, b, costly], counts, 2) == [[costly], [heavy, b]]


@pytest.mark.parametrize(
    "types",
    [{"n": "integer", "t": "text", "f": "float8"}, {"n": "integer", "t": "text"}],
    ids=["binary", "text (a column of no known type)"],
)
@settings(max_examples=5)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.text()), st.floats(allow_nan=False, allow_infinity=False)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_rebuilds_folded_rows_reach_the_store_as_they_were(
    read: ReadSide, rows: list[tuple[str | None, float]], types: dict[str, str]
) -> None:
    """The step that writes a folded table to the store (PostgreSQL: binary COPY,
    or text COPY when a column's type is not known): any text (tabs, newlines,
    backslashes, a literal \\N, any character) and NULL as they were, floats to
    the last bit."""
    rows = [(t.replace("\x00", ""), f) if t else (t, f) for t, f in rows]  # PostgreSQL text
    rows += [("a\tb\nc\r\\d", 1767225600.1234567), ("\\N", 0.1), ("Zoë 😀 \\\\t", -5e-324)]
    table = f"copy_check_{next(_prefixes)}"
    with scratch() as conn:
        conn.execute(f"CREATE TABLE {table} (n INTEGER, t TEXT, f DOUBLE PRECISION)")
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?)", [(i, *r) for i, r in enumerate(rows)]
        )
        with read.store.transaction(pipeline=False) as c:
            c.execute(f"CREATE TABLE {table} (n INTEGER, t TEXT, f DOUBLE PRECISION)")
            _copy(conn, c, table, types)
    try:
        with read.store.transaction(commit=False) as c:
            held = c.query(f"SELECT t, f FROM {table} ORDER BY n")
        assert [(r["t"], r["f"]) for r in held] == rows
    finally:
        with read.store.transaction(pipeline=False) as c:
            c.execute(f"DROP TABLE {table}")


def test_readers_never_see_a_half_built_projection(feed: Feed, read: ReadSide) -> None:
    for i in range(20):
        feed(
            "customer.subscription.created",
            so.subscription(f"sub_{i}", "cus_1", user_id=USER),
            T + i,
            catch_up=False,
        )
    feed.ledger.process_new()
    read.catchup.run_once()
    before = snapshot(read)
    seen: list[dict[str, Any]] = []
    status = next(p for p in read.projections if p.name == "subscription_status")
    rebuild(read.catchup, status, batch_size=2, progress=lambda n, pos: seen.append(snapshot(read)))
    assert len(seen) > 3 and all(s == before for s in seen)
    assert snapshot(read) == before
    assert read.positions()[0]["generation"] == 2


@settings(max_examples=8)
@given(st.data())
def test_as_of_a_user_equals_the_live_projection_then_and_now(
    ledger: Ledger, read: ReadSide, data: st.DataObject
) -> None:
    """ "As of" folds only the user's own aggregates; for every user of generated
    multi-customer streams it must say what the live projections (built from
    everything) said at that moment, and say now."""
    stream = data.draw(webhook_streams(prefix=f"a{next(_prefixes)}_"))
    cut = data.draw(st.integers(1, len(stream)))
    users = sorted({u.decode() for d in stream for u in re.findall(rb'"(user_[^"]+)"', d.body)})

    def feed(part: list[Any]) -> datetime:
        for d in part:
            ledger.record([read_delivery(d.body)])
        ledger.process_new()
        read.catchup.run_once()
        return datetime.now(UTC)

    def live(user: str, at: datetime) -> dict[str, Any]:
        now = at.timestamp()
        return {
            "subscription": read.status(user, now=now),
            "entitlements": read.entitlements(user, now=now),
            "invoices": read.invoices(user),
        }

    moment = feed(stream[:cut])
    then = {user: live(user, moment) for user in users}
    now = feed(stream[cut:])
    for user in users:
        for at, expected in ((moment, then[user]), (now, live(user, now))):
            # through the ownership index, and by scanning the whole log
            for owners in (read.owners, None):
                answer = replay_user(ledger, load_catalog(), user, at, owners)
                assert {k: answer[k] for k in expected} == expected


def test_as_of_equals_what_the_live_projection_said_then(
    feed: Feed, read: ReadSide, ledger: Ledger
) -> None:
    feed("customer.created", so.customer("cus_1", user_id=USER), T)
    feed("customer.subscription.created", premium(), T + 1)
    feed("invoice.paid", so.invoice("in_1", "cus_1", "sub_1"), T + 2)
    moment = datetime.now(UTC)
    then = {
        "subscription": read.status(USER, now=moment.timestamp()),
        "entitlements": read.entitlements(USER, now=moment.timestamp()),
        "invoices": read.invoices(USER),
    }
    feed("invoice.payment_failed", so.invoice("in_2", "cus_1", "sub_1", status="open"), T + 40)
    feed("customer.subscription.updated", premium("past_due", cancel_at_period_end=True), T + 41)
    feed("customer.subscription.deleted", premium("canceled"), T + 50)
    answer = replay_user(ledger, load_catalog(), USER, moment)
    assert {k: answer[k] for k in then} == then
    assert answer["subscription"]["status"] == "active"
    now = replay_user(ledger, load_catalog(), USER, datetime.now(UTC))
    assert now["subscription"] == read.status(USER) and now["subscription"]["status"] == "canceled"


def test_as_of_counts_a_one_off_invoice_of_a_customer_linked_later(
    feed: Feed, read: ReadSide, ledger: Ledger
) -> None:
    feed("invoice.paid", so.invoice("in_1", "cus_2", None, amount=500), T)
    feed("customer.created", so.customer("cus_2", user_id=USER), T + 1)
    for owners in (None, read.owners):
        answer = replay_user(ledger, load_catalog(), USER, datetime.now(UTC), owners)
        assert [i["amount_paid"] for i in answer["invoices"]] == [500]
        assert answer["invoices"] == read.invoices(USER)


def test_as_of_through_a_lagging_ownership_index_misses_nothing(
    feed: Feed, read: ReadSide, ledger: Ledger
) -> None:
    """The index is behind the log (its runner has not caught up): the log past
    its position is read too."""
    feed("invoice.paid", so.invoice("in_1", "cus_2", None, amount=500), T)
    ownership = next(p for p in read.projections if p.name == "ownership")
    read.catchup.projections = [p for p in read.projections if p is not ownership]
    feed("customer.created", so.customer("cus_2", user_id=USER), T + 1)
    feed("customer.subscription.created", so.subscription("sub_2", "cus_2", user_id=USER), T + 2)
    _, position = read.owners(USER)
    assert position < read.catchup.head()
    answer = replay_user(ledger, load_catalog(), USER, datetime.now(UTC), read.owners)
    assert [i["amount_paid"] for i in answer["invoices"]] == [500]
    assert answer["subscription"] == read.status(USER)


def test_a_failing_read_is_reported_as_the_stores_failure(read: ReadSide) -> None:
    """Both stores raise the library's PersistenceError, which the API answers
    with 503 store_unavailable rather than 500."""
    from eventsourcing.persistence import PersistenceError

    with pytest.raises(PersistenceError), read.store.reading() as c:
        c.query("SELECT * FROM no_such_table")


def test_an_index_declared_later_is_built_at_the_next_start(read: ReadSide) -> None:
    notifications = next(p for p in read.projections if p.name == "notifications")
    catalog = (
        "SELECT indexname AS name FROM pg_indexes WHERE indexname = :name"
        if read.store.is_postgres
        else "SELECT name FROM sqlite_master WHERE type = 'index' AND name = :name"
    )

    def present() -> bool:
        with read.store.transaction(commit=False) as c:
            return bool(c.query(catalog, {"name": "notifications_unlinked_g1"}))

    assert present()
    with read.store.transaction() as c:
        c.execute("DROP INDEX notifications_unlinked_g1")
    assert not present()
    read.catchup.ensure(notifications)
    assert present()


def test_a_start_does_not_wait_for_a_projections_writer(read: ReadSide) -> None:
    """A second process starting while a runner holds a batch open must not queue
    behind it (PostgreSQL's CREATE INDEX IF NOT EXISTS would; SQLite's writer lock
    would)."""
    notifications = next(p for p in read.projections if p.name == "notifications")
    with read.store.transaction() as c:
        c.execute(
            "INSERT INTO notifications_g1 (cursor, subscription_id, stripe_subscription_id, "
            "kind, occurred_at, detail) VALUES (1, 's', 'sub_1', 'activated', 0, '{}')"
        )
        started = threading.Thread(target=read.catchup.ensure, args=(notifications,))
        started.start()
        started.join(timeout=10)  # blocked, it would wait for as long as the batch is open
        assert not started.is_alive(), "ensure waited for the open batch"


def test_several_positions_are_recorded_at_once_and_only_forward(database_url: str) -> None:
    """The one-pass runner records every projection's position in one statement
    (PostgreSQL): each moves forward, and when any would not, none is recorded."""
    from eventsourcing.persistence import IntegrityError

    from projections.store import ViewStore

    store = ViewStore(database_url)
    try:
        with store.transaction() as c:
            store.record_positions(c, {"a_g1": 5, "b_g1": 7})
        assert store.positions(["a_g1", "b_g1"]) == {"a_g1": 5, "b_g1": 7}
        with pytest.raises(IntegrityError, match="b_g1"), store.transaction() as c:
            store.record_positions(c, {"a_g1": 9, "b_g1": 7})  # b would not move forward
        assert store.positions(["a_g1", "b_g1"]) == {"a_g1": 5, "b_g1": 7}  # neither did
        with store.transaction() as c:
            store.record_positions(c, {"b_g1": 8, "a_g1": 9})
        assert store.positions(["a_g1", "b_g1"]) == {"a_g1": 9, "b_g1": 8}
    finally:
        store.close()


def test_the_streams_fan_out_is_woken_by_another_process_runner_and_by_its_own(
    ledger: Ledger, settings: Settings
) -> None:
    """What the README promises of streams: the fan-out reads when the position
    watcher sees another process's runner move the feed, and at once when its own
    runner applied events. Its own tick is set to a minute here, so only a wake can
    deliver within the test's two seconds."""
    import asyncio
    import time

    here = ReadSide(ledger, load_catalog(), settings.database_url)
    there = ReadSide(ledger, load_catalog(), settings.database_url)  # another process's
    deliver = Feed(ledger, there)

    async def run() -> list[float]:
        here.fanout.interval = 60
        await here.open_async()
        waited = []
        try:
            stream = here.fanout.subscribe(USER)
            await asyncio.sleep(0.1)  # the fan-out's first read is done; it sleeps
            for n, runner in enumerate((there, here)):
                deliver(
                    "customer.subscription.created",
                    so.subscription(f"sub_wake{n}", "cus_1", user_id=USER),
                    T + n,
                    catch_up=False,
                )
                ledger.process_new()
                started = time.monotonic()
                await asyncio.to_thread(runner.catchup.run_once)
                row = await stream.next(5)
                waited.append(time.monotonic() - started)
                assert row is not None and row["stripe_subscription_id"] == f"sub_wake{n}"
                while await stream.next(0.3) is not None:  # the rest of that delivery's
                    pass
        finally:
            await here.close_async()
        return waited

    try:
        waited = asyncio.run(run())
    finally:
        here.close()
        there.close()
    assert all(w < 2 for w in waited), waited


def test_batches_that_fail_part_way_leave_the_prepared_statements_usable(
    postgres_url: str,
) -> None:
    """Projection statements are prepared on first use, inside a pipeline. A batch
    that fails on its first statement (as when another runner wrote the tracking
    position first) never gets the later ones to the server: psycopg must not
    believe them prepared, or every later batch on that connection would fail."""
    from eventsourcing.persistence import IntegrityError

    from projections.store import ViewStore

    store = ViewStore(postgres_url)
    try:
        with store.transaction() as c:
            c.execute("CREATE TABLE prepared_t (id INTEGER PRIMARY KEY, v TEXT)")
            c.execute("INSERT INTO prepared_t VALUES (0, 'first')")
        failed, seen = [], []
        for i in range(1, 25):
            try:
                with store.transaction() as c:
                    if i % 3 == 1:  # the first batch among them, before any is prepared
                        c.execute("INSERT INTO prepared_t VALUES (0, 'again')")
                    c.execute("INSERT INTO prepared_t VALUES (:i, 'new')", {"i": i})
                    c.execute("UPDATE prepared_t SET v = 'changed' WHERE id = :i", {"i": i})
                    seen += c.query("SELECT id, v FROM prepared_t WHERE id = :i", {"i": i})
            except IntegrityError:
                failed.append(i)
        assert failed == list(range(1, 25, 3))
        with store.reading() as c:
            rows = c.query("SELECT id, v FROM prepared_t WHERE id > 0 ORDER BY id")
        kept = [i for i in range(1, 25) if i not in failed]
        assert rows == [{"id": i, "v": "changed"} for i in kept]
        assert seen == rows
    finally:
        store.close()


def test_batches_after_a_schema_change_on_the_same_connections_find_their_statements(
    postgres_url: str,
) -> None:
    """Tables made, views swapped: schema changes on the connections the batches use
    (eight, taken in turn). Every later batch still finds its prepared statements
    (in a pipeline, psycopg's DEALLOCATE ALL after a schema change once dropped the
    next transaction's first statement behind its back)."""
    from ledger.opening import open_ledger
    from scripts.dev.synthetic import fill
    from tests.conftest import make_settings

    ledger = open_ledger(make_settings(postgres_url))
    try:
        fill(ledger, customers=60)
        read = ReadSide(ledger, load_catalog(), postgres_url)
        try:
            read.catchup.batch_size = 40
            assert read.catchup.run_once() > 0
            notifications = next(p for p in read.projections if p.name == "notifications")
            rebuild(read.catchup, notifications)  # a swap: views dropped and made again
            fill(ledger, customers=60, start=60)
            assert read.catchup.run_once() > 0
            head = read.catchup.head()
            assert {row["position"] for row in read.positions()} == {head}
        finally:
            read.close()
    finally:
        ledger.close()
