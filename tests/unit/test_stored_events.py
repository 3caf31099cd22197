"""The created events' stored JSON is what the code before "field lists once"
wrote for the same inputs, byte for byte (but the time); and it replays. The
events API calls record (`User`'s, `Erasure`'s) are what the code before request
ids wrote, plus the request id and their version (2); what that code wrote replays,
with no request id."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

from ledger.domain.cause import Cause
from ledger.domain.checkout import Checkout, CheckoutFacts
from ledger.domain.erasure import Erasure
from ledger.domain.invoice import Invoice, InvoiceFacts
from ledger.domain.money import Price
from ledger.domain.subscription import Subscription, SubscriptionState
from ledger.domain.user import User
from ledger.store.library import LeanMapper
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


def mapper(kind: type[Mapper] = Mapper) -> Mapper:
    transcoder = JSONTranscoder()
    for transcoding in (PriceAsDict(), UUIDAsHex(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return kind(transcoder)


# every replay, upcasts included, by the library's mapper and by the ledger's
MAPPERS = pytest.mark.parametrize("kind", [Mapper, LeanMapper], ids=["library", "lean"])


@pytest.mark.parametrize(
    "aggregate",
    [
        lambda: Checkout.record(CHECKOUT, CAUSE),
        lambda: Invoice.record(INVOICE),
        lambda: Subscription.start(SUBSCRIPTION, CAUSE),
    ],
    ids=["checkout", "invoice", "subscription"],
)
@MAPPERS
def test_created_events_are_stored_as_before_and_replay(
    aggregate: Callable[[], Any], kind: type[Mapper]
) -> None:
    made = aggregate()
    m = mapper(kind)
    stored = [m.to_stored_event(e) for e in made.collect_events()]
    for s in stored:
        state = re.sub(rb'"timestamp":\{[^}]*\}', b'"timestamp":T', s.state).decode()
        assert state == WRITTEN_NOW[s.topic]
    replayed = None
    for s in stored:
        replayed = m.to_domain_event(s).mutate(replayed)
    assert replayed == made


@MAPPERS
def test_an_invoice_recorded_before_version_2_replays_without_created(kind: type[Mapper]) -> None:
    m = mapper(kind)
    made = Invoice.record(INVOICE)
    stored = m.to_stored_event(made.collect_events()[0])
    v1 = WRITTEN_BEFORE["ledger.invoice:Invoice.Recorded"].replace(
        "T", re.search(rb'"timestamp":(\{[^}]*\})', stored.state).group(1).decode()
    )
    old = type(stored)(stored.originator_id, 1, stored.topic, v1.encode())
    replayed = m.to_domain_event(old)
    assert replayed.created is None
    assert replayed.mutate(None).stripe_invoice_id == "in_1"


# --- the events API calls record: version 2 adds the request id ------------------------

USER_ID = "user_1767225600_abcdefghij"


def api_calls(request_id: str | None) -> list[Any]:
    """A user and an erasure with every event an API call records, for fixed inputs."""
    kw = {} if request_id is None else {"request_id": request_id}
    user = User(user_id=USER_ID, token_hash="h0", **kw)
    user.customer_created("cus_1", **kw)
    user.subscription_created("price_1", "month", None, "sub_1", "incomplete", **kw)
    user.cancellation_requested("sub_1", False, "active", 20, **kw)
    user.payment_method_updated("sub_1", "pm_1", **kw)
    user.customer_details_updated("cus_1", "e", None, **kw)
    user.plan_change_requested(
        "sub_1", "price_1", "price_2", "downgrade", 20, None, "sub_sched_1", "active", **kw
    )
    user.resume_requested("sub_1", True, "sub_sched_1", "active", **kw)
    user.checkout_started("cs_1", "cus_1", "price_1", "https://s", "https://c", **kw)
    user.portal_opened("cus_1", "https://r", **kw)
    user.stripe_call_failed("portal", "card_declined", "no", **kw)
    user.rotate_token("h1", **kw)
    user.revoke_tokens(**kw)
    erasure = Erasure(user_id=USER_ID, **kw)
    erasure.erased(["cus_1"], 1, **kw)
    return [user, erasure]


# Written by commit 0dfbaa6 (the code before request ids) for `api_calls(None)`
# (its "timestamp" masked as T); version 1 of each class.
API_WRITTEN_BEFORE = {
    "ledger.user:User.Registered": (
        '{"timestamp":T,"originator_topic":"ledger.user:User",'
        '"user_id":"user_1767225600_abcdefghij","token_hash":"h0"}'
    ),
    "ledger.user:User.CustomerCreated": '{"timestamp":T,"stripe_customer_id":"cus_1"}',
    "ledger.user:User.SubscriptionCreated": (
        '{"timestamp":T,"price_id":"price_1","billing_cycle":"month","return_url":null,'
        '"stripe_subscription_id":"sub_1","stripe_status":"incomplete"}'
    ),
    "ledger.user:User.CancellationRequested": (
        '{"timestamp":T,"stripe_subscription_id":"sub_1","immediate":false,'
        '"stripe_status":"active","effective_at":20}'
    ),
    "ledger.user:User.PaymentMethodUpdated": (
        '{"timestamp":T,"stripe_subscription_id":"sub_1","payment_method_id":"pm_1"}'
    ),
    "ledger.user:User.CustomerDetailsUpdated": (
        '{"timestamp":T,"stripe_customer_id":"cus_1","email":"e","name":null}'
    ),
    "ledger.user:User.PlanChangeRequested": (
        '{"timestamp":T,"stripe_subscription_id":"sub_1","from_price_id":"price_1",'
        '"to_price_id":"price_2","change":"downgrade","effective_at":20,'
        '"proration_behavior":null,"stripe_schedule_id":"sub_sched_1","stripe_status":"active"}'
    ),
    "ledger.user:User.ResumeRequested": (
        '{"timestamp":T,"stripe_subscription_id":"sub_1","withdrew_cancellation":true,'
        '"released_schedule_id":"sub_sched_1","stripe_status":"active"}'
    ),
    "ledger.user:User.CheckoutStarted": (
        '{"timestamp":T,"stripe_session_id":"cs_1","stripe_customer_id":"cus_1",'
        '"price_id":"price_1","success_url":"https://s","cancel_url":"https://c"}'
    ),
    "ledger.user:User.PortalOpened": (
        '{"timestamp":T,"stripe_customer_id":"cus_1","return_url":"https://r"}'
    ),
    "ledger.user:User.StripeCallFailed": (
        '{"timestamp":T,"action":"portal","error_code":"card_declined","message":"no"}'
    ),
    "ledger.user:User.TokenRotated": '{"timestamp":T,"token_hash":"h1"}',
    "ledger.user:User.TokensRevoked": '{"timestamp":T}',
    "ledger.erasure:Erasure.Requested": (
        '{"timestamp":T,"originator_topic":"ledger.erasure:Erasure",'
        '"user_id":"user_1767225600_abcdefghij"}'
    ),
    "ledger.erasure:Erasure.PersonalDataErased": (
        '{"timestamp":T,"stripe_customer_ids":["cus_1"],"keys_deleted":1}'
    ),
}


def written_now(before: str, request_id: str | None) -> str:
    """Version 2: the request id after the library's own fields (it is a base
    class's field), the class version last (the library's mapper adds it)."""
    rid = "null" if request_id is None else f'"{request_id}"'
    head = re.match(r'\{"timestamp":T(,"originator_topic":"[^"]*")?', before).group(0)
    return f'{head},"request_id":{rid}{before[len(head) : -1]},"class_version":2}}'


def masked(state: bytes) -> str:
    return re.sub(rb'"timestamp":\{[^}]*\}', b'"timestamp":T', state).decode()


@pytest.mark.parametrize("request_id", ["abc-123", None])
@MAPPERS
def test_api_events_are_stored_as_before_with_the_request_id_and_replay(
    request_id: str | None, kind: type[Mapper]
) -> None:
    m = mapper(kind)
    for made in api_calls(request_id):
        stored = [m.to_stored_event(e) for e in made.collect_events()]
        for s in stored:
            assert masked(s.state) == written_now(API_WRITTEN_BEFORE[s.topic], request_id)
        replayed = None
        for s in stored:
            event = m.to_domain_event(s)
            assert event.request_id == request_id
            replayed = event.mutate(replayed)
        assert replayed == made


@MAPPERS
def test_api_events_recorded_before_version_2_replay_without_a_request_id(
    kind: type[Mapper],
) -> None:
    m = mapper(kind)
    for made in api_calls(None):
        replayed = None
        for event in made.collect_events():
            stored = m.to_stored_event(event)
            when = re.search(rb'"timestamp":(\{[^}]*\})', stored.state).group(1).decode()
            v1 = API_WRITTEN_BEFORE[stored.topic].replace('"timestamp":T', f'"timestamp":{when}')
            old = type(stored)(stored.originator_id, stored.originator_version, stored.topic,
                               v1.encode())  # fmt: skip
            upcast = m.to_domain_event(old)
            assert upcast.request_id is None and type(upcast) is type(event)
            assert vars(upcast) == vars(event)
            replayed = upcast.mutate(replayed)
        assert replayed == made


def test_the_topics_of_api_events_did_not_change() -> None:
    m = mapper()
    topics = {m.to_stored_event(e).topic for made in api_calls("r") for e in made.collect_events()}
    assert topics == set(API_WRITTEN_BEFORE)
