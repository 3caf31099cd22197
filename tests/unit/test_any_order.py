"""Any permutation of a delivery stream, with any duplicates, ends in exactly the
state of the ordered stream; and replaying the recorded events gives it again."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.checkout import Checkout
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice
from ledger.domain.subscription import Subscription
from ledger.stripe.translator import translate
from tests.streams import Delivery, shuffled_with_duplicates, webhook_streams
from tests.unit.test_translator import MemoryUnitOfWork


def state_of(aggregate: Any) -> tuple[Any, ...]:
    if isinstance(aggregate, Subscription):
        return (
            "subscription",
            aggregate.stripe_subscription_id,
            aggregate.status,
            aggregate.price,
            aggregate.current_period_start,
            aggregate.current_period_end,
            aggregate.cancel_at_period_end,
            aggregate.cancel_at,
            aggregate.trial_end,
            aggregate.ended_at,
            aggregate.user_id,
            aggregate.last_cause,
        )
    if isinstance(aggregate, Customer):
        return (
            "customer",
            aggregate.stripe_customer_id,
            aggregate.email,
            aggregate.user_id,
            tuple(sorted(aggregate.stripe_subscription_ids)),
        )
    if isinstance(aggregate, Invoice):
        return (
            "invoice",
            aggregate.stripe_invoice_id,
            aggregate.status,
            aggregate.amount_paid,
            aggregate.stripe_subscription_id,
        )
    assert isinstance(aggregate, Checkout)
    return ("checkout", aggregate.stripe_session_id, aggregate.user_id)


def run(stream: list[Delivery]) -> MemoryUnitOfWork:
    uow = MemoryUnitOfWork()
    for delivery in stream:
        translate(uow, delivery.body)
    return uow


def states(uow: MemoryUnitOfWork) -> set[tuple[Any, ...]]:
    return {state_of(a) for a in uow.aggregates.values()}


def replayed(uow: MemoryUnitOfWork) -> set[tuple[Any, ...]]:
    """Each aggregate rebuilt from the events it recorded, as the store would."""
    rebuilt = set()
    for aggregate in uow.aggregates.values():
        copy = None
        for event in aggregate.collect_events():
            copy = event.mutate(copy)
        rebuilt.add(state_of(copy))
    return rebuilt


@settings(max_examples=300)
@given(st.data())
def test_any_order_and_duplication_ends_in_the_ordered_state(data: st.DataObject) -> None:
    stream = data.draw(webhook_streams())
    delivered = data.draw(shuffled_with_duplicates(stream))
    expected = states(run(stream))
    actual = run(delivered)
    assert states(actual) == expected
    assert replayed(actual) == expected
    # and not merely the same as the translator's own ordered run: Stripe's last word
    assert subscription_statuses(actual) == last_statuses(stream)


def subscription_statuses(uow: MemoryUnitOfWork) -> dict[str, str]:
    return {
        a.stripe_subscription_id: a.status
        for a in uow.aggregates.values()
        if isinstance(a, Subscription)
    }


def last_statuses(stream: list[Delivery]) -> dict[str, str]:
    """Each subscription's status in the latest event about it, from the payloads."""
    statuses = {}
    for d in sorted(stream, key=lambda d: d.created):
        if d.event_type.startswith("customer.subscription."):
            obj = json.loads(d.body)["data"]["object"]
            statuses[obj["id"]] = obj["status"]
    return statuses


def test_the_stream_generator_covers_the_lifecycle() -> None:
    """Guards the property above against a generator that produces nothing useful."""
    seen: set[str] = set()

    @settings(max_examples=200)
    @given(webhook_streams())
    def collect(stream: list[Delivery]) -> None:
        seen.update(d.event_type for d in stream)

    collect()
    assert seen >= {
        "customer.created",
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.trial_will_end",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.updated",
    }
