"""The created events' stored JSON is what the code before "field lists once"
wrote for the same inputs, byte for byte (but the time); and it replays."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

from ledger.domain.cause import Cause
from ledger.domain.checkout import Checkout, CheckoutFacts
from ledger.domain.invoice import Invoice, InvoiceFacts
from ledger.domain.money import Price
from ledger.domain.subscription import Subscription, SubscriptionState
from ledger.store.transcodings import PriceAsDict

PRICE = Price("price_1", 999, "usd", "month", 1, "lk", "prod_1", "Nick")
CAUSE = Cause(100, "evt_1")
INVOICE = InvoiceFacts(
    stripe_invoice_id="in_1",
    stripe_customer_id="cus_1",
    stripe_subscription_id="sub_1",
    number="N-1",
    currency="usd",
    amount_due=999,
    amount_paid=0,
    period_start=10,
    period_end=20,
    attempt_count=1,
    next_payment_attempt=30,
    hosted_invoice_url="https://x",
    billing_reason="subscription_create",
    created=5,
)
SUBSCRIPTION = SubscriptionState(
    stripe_subscription_id="sub_1",
    stripe_customer_id="cus_1",
    status="canceled",
    price=PRICE,
    current_period_start=10,
    current_period_end=20,
    cancel_at_period_end=True,
    cancel_at=None,
    trial_end=15,
    ended_at=25,
    user_id="user_1",
)
CHECKOUT = CheckoutFacts(
    stripe_session_id="cs_1",
    stripe_customer_id="cus_1",
    stripe_subscription_id="sub_1",
    user_id="user_1",
    mode="subscription",
    amount_total=999,
    currency="usd",
)

# Written by commit f4ec844 for the inputs above (its "timestamp" masked as T).
WRITTEN_BEFORE = {
    "ledger.checkout:Checkout.Completed": (
        '{"timestamp":T,"originator_topic":"ledger.checkout:Checkout",'
        '"stripe_session_id":"cs_1","stripe_customer_id":"cus_1",'
        '"stripe_subscription_id":"sub_1","user_id":"user_1","mode":"subscription",'
        '"amount_total":999,"currency":"usd","stripe_event_id":"evt_1","stripe_created":100}'
    ),
    "ledger.invoice:Invoice.Recorded": (
        '{"timestamp":T,"originator_topic":"ledger.invoice:Invoice",'
        '"stripe_invoice_id":"in_1","stripe_customer_id":"cus_1",'
        '"stripe_subscription_id":"sub_1","number":"N-1","currency":"usd","amount_due":999,'
        '"period_start":10,"period_end":20,"hosted_invoice_url":"https://x",'
        '"billing_reason":"subscription_create"}'
    ),
    "ledger.subscription:Subscription.Started": (
        '{"timestamp":T,"originator_topic":"ledger.subscription:Subscription",'
        '"stripe_subscription_id":"sub_1","stripe_customer_id":"cus_1","user_id":"user_1",'
        '"status":"canceled","price":{"_type_":"price","_data_":{"stripe_price_id":"price_1",'
        '"unit_amount":999,"currency":"usd","interval":"month","interval_count":1,'
        '"lookup_key":"lk","stripe_product_id":"prod_1","nickname":"Nick"}},'
        '"current_period_start":10,"current_period_end":20,"cancel_at_period_end":true,'
        '"cancel_at":null,"trial_end":15,"stripe_event_id":"evt_1","stripe_created":100}'
    ),
    "ledger.subscription:Subscription.Ended": (
        '{"timestamp":T,"status":"canceled","ended_at":25,"stripe_event_id":"evt_1",'
        '"stripe_created":100}'
    ),
}


# What changed since, on purpose: Invoice.Recorded v2 records Stripe's `created`.
WRITTEN_NOW = {
    **WRITTEN_BEFORE,
    "ledger.invoice:Invoice.Recorded": WRITTEN_BEFORE["ledger.invoice:Invoice.Recorded"][:-1]
    + ',"created":5,"class_version":2}',
}


def mapper() -> Mapper:
    transcoder = JSONTranscoder()
    for transcoding in (PriceAsDict(), UUIDAsHex(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder)


@pytest.mark.parametrize(
    "aggregate",
    [
        lambda: Checkout.record(CHECKOUT, CAUSE),
        lambda: Invoice.record(INVOICE),
        lambda: Subscription.start(SUBSCRIPTION, CAUSE),
    ],
    ids=["checkout", "invoice", "subscription"],
)
def test_created_events_are_stored_as_before_and_replay(aggregate: Callable[[], Any]) -> None:
    made = aggregate()
    m = mapper()
    stored = [m.to_stored_event(e) for e in made.collect_events()]
    for s in stored:
        state = re.sub(rb'"timestamp":\{[^}]*\}', b'"timestamp":T', s.state).decode()
        assert state == WRITTEN_NOW[s.topic]
    replayed = None
    for s in stored:
        replayed = m.to_domain_event(s).mutate(replayed)
    assert replayed == made


def test_an_invoice_recorded_before_version_2_replays_without_created() -> None:
    m = mapper()
    made = Invoice.record(INVOICE)
    stored = m.to_stored_event(made.collect_events()[0])
    v1 = WRITTEN_BEFORE["ledger.invoice:Invoice.Recorded"].replace(
        "T", re.search(rb'"timestamp":(\{[^}]*\})', stored.state).group(1).decode()
    )
    old = type(stored)(stored.originator_id, 1, stored.topic, v1.encode())
    replayed = m.to_domain_event(old)
    assert replayed.created is None
    assert replayed.mutate(None).stripe_invoice_id == "in_1"
