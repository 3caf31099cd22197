"""The list calls of `ledger backfill` and `ledger reconcile`, as Stripe receives
them through the library's pluggable HTTP client (RecordingTransport): filters
(some localstripe lacks), `limit=100` pages after the last id, pacing and our
own back-off on 429. Nothing here opens a connection."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.domain.receipt import Source
from ledger.stripe.gateway import StripeGateway, StripeUnavailable
from tests import stripe_objects as so
from tests.unit.test_stripe_gateway import (
    API_KEY,
    PRICE,
    USER,
    RecordingTransport,
    customer_json,
    error_json,
    subscription_json,
)

HANDLED = ["customer.created", "customer.subscription.updated", "invoice.paid"]


def listing(items: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": items}


def event_json(evt: str, event_type: str = "customer.created") -> dict[str, Any]:
    customer = so.customer("cus_A", email="a@example.com", user_id=USER)
    return so.event(evt, event_type, customer, created=1_767_225_700)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def gateway(transport: RecordingTransport, sleeps: Sleeps, **kwargs: Any) -> StripeGateway:
    return StripeGateway(API_KEY, http_client=transport, sleep=sleeps, **kwargs)


def test_events_are_paged_with_the_handled_types_since_a_time(transport, sleeps) -> None:
    transport.answer(200, listing([event_json("evt_2"), event_json("evt_1")], "/v1/events", True))
    transport.answer(200, listing([event_json("evt_0")], "/v1/events"))
    pages = list(gateway(transport, sleeps).events(1_767_225_600, HANDLED))

    first, second = transport.requests
    assert (first.method, first.path) == ("get", "/v1/events")
    assert first.params == {
        "created[gte]": "1767225600",
        "limit": "100",
        "types[0]": "customer.created",
        "types[1]": "customer.subscription.updated",
        "types[2]": "invoice.paid",
    }
    assert second.params == {**first.params, "starting_after": "evt_1"}
    deliveries = [d for page in pages for d in page.items]
    assert [d.stripe_event_id for d in deliveries] == ["evt_2", "evt_1", "evt_0"]
    assert {d.source for d in deliveries} == {Source.BACKFILL}
    assert so.body_of(event_json("evt_0")) == deliveries[-1].payload.encode()  # the event's JSON


def test_localstripe_has_no_types_filter_so_the_types_are_filtered_here(transport, sleeps) -> None:
    mixed = [event_json("evt_1"), event_json("evt_2", "plan.created")]
    transport.answer(200, listing(mixed, "/v1/events"))
    pages = list(
        gateway(
            transport, sleeps, api_base="http://127.0.0.1:8420", payment_behavior="allow_incomplete"
        ).events(0, HANDLED)
    )
    [request] = transport.requests
    assert request.params == {"created[gte]": "0", "limit": "100"}
    assert [d.stripe_event_id for d in pages[0].items] == ["evt_1"]


def test_subscriptions_are_listed_with_every_status_and_read_into_our_words(
    transport, sleeps
) -> None:
    transport.answer(
        200, listing([subscription_json("active", sub_id="sub_1")], "/v1/subscriptions", True)
    )
    transport.answer(
        200, listing([subscription_json("canceled", sub_id="sub_2")], "/v1/subscriptions")
    )
    pages = list(gateway(transport, sleeps).subscriptions())
    assert [r.params for r in transport.requests] == [
        {"status": "all", "limit": "100"},
        {"status": "all", "limit": "100", "starting_after": "sub_1"},
    ]
    states = [s for page in pages for s in page.items]
    assert [(s.stripe_subscription_id, s.status) for s in states] == [
        ("sub_1", "active"),
        ("sub_2", "canceled"),
    ]
    assert states[0].price is not None and states[0].price.stripe_price_id == PRICE
    assert all(page.fetched_at > 0 for page in pages)


def test_customers_are_listed_by_page(transport, sleeps) -> None:
    transport.answer(200, listing([customer_json("cus_A")], "/v1/customers"))
    [page] = list(gateway(transport, sleeps).customers())
    assert transport.requests[0].path == "/v1/customers"
    assert transport.requests[0].params == {"limit": "100"}
    assert [(c.stripe_customer_id, c.user_id) for c in page.items] == [("cus_A", USER)]


def test_a_429_is_waited_out_with_growing_back_off(transport, sleeps) -> None:
    for _ in range(2):
        transport.answer(429, error_json("Too many requests", "rate_limit_error"))
    transport.answer(200, listing([customer_json("cus_A")], "/v1/customers"))
    [page] = list(gateway(transport, sleeps, reads_per_second=1000).customers())
    assert len(page.items) == 1 and len(transport.requests) == 3
    back_off = [s for s in sleeps if s >= 0.5]  # besides the pacing
    assert len(back_off) == 2 and 0.5 <= back_off[0] <= 1.0 and 1.0 <= back_off[1] <= 2.0


def test_a_429_that_does_not_end_gives_up_as_unavailable(transport, sleeps) -> None:
    for _ in range(7):
        transport.answer(429, error_json("Too many requests", "rate_limit_error"))
    with pytest.raises(StripeUnavailable) as caught:
        list(gateway(transport, sleeps, reads_per_second=1000).customers())
    assert caught.value.http_status == 429 and len(transport.requests) == 7


def test_pages_are_paced_below_the_read_rate(transport, sleeps) -> None:
    for n in range(3):
        transport.answer(200, listing([customer_json(f"cus_{n}")], "/v1/customers", n < 2))
    list(gateway(transport, sleeps, reads_per_second=10).customers())
    assert len(sleeps) == 2 and all(0.05 < s <= 0.1 for s in sleeps)
