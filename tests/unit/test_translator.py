"""The anti-corruption layer, one test per handled type, in both API shapes. Pure:
an in-memory unit of work, no store."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate
from pydantic import BaseModel

from ledger.domain.checkout import Checkout
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice
from ledger.domain.money import Price
from ledger.domain.receipt import Outcome
from ledger.domain.subscription import Subscription
from ledger.stripe.translator import TRANSLATORS, aggregates_named, read_event, translate
from tests import stripe_objects as so

A = TypeVar("A", bound=Aggregate)
SHAPES = ["current", "legacy"]
USER = "user_1767225600_abcdefghij"


class MemoryUnitOfWork:
    def __init__(self) -> None:
        self.aggregates: dict[UUID, Aggregate] = {}

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        aggregate = self.aggregates.get(aggregate_id)
        assert aggregate is None or isinstance(aggregate, cls)
        return aggregate

    def add(self, aggregate: Aggregate) -> None:
        self.aggregates[aggregate.id] = aggregate

    def protect(self, subject: str, value: str | None) -> str | None:
        return value

    def apply(
        self,
        evt_id: str,
        event_type: str,
        obj: dict[str, Any],
        created: int,
        shape: str = "current",
    ) -> Outcome:
        envelope = so.event(evt_id, event_type, obj, created=created, shape=shape)  # type: ignore[arg-type]
        return translate(self, so.body_of(envelope))

    def new_events(self) -> list[str]:
        events = [e for a in self.aggregates.values() for e in a.collect_events()]
        return [type(e).__qualname__ for e in events]

    def subscription_event(
        self, evt_id: str, event_type: str, created: int, shape: str = "current", **fields: Any
    ) -> Outcome:
        """An event about sub_1 of cus_1, in the given shape."""
        obj = so.subscription("sub_1", "cus_1", shape=shape, **fields)  # type: ignore[arg-type]
        return self.apply(evt_id, event_type, obj, created, shape)

    def subscription(self, sub_id: str = "sub_1") -> Subscription:
        found = self.get(Subscription, Subscription.create_id(sub_id))
        assert found is not None
        return found


@pytest.fixture
def uow() -> MemoryUnitOfWork:
    return MemoryUnitOfWork()


def test_every_type_of_the_issue_has_a_translator() -> None:
    assert set(TRANSLATORS) == {
        "customer.created", "customer.updated",
        "customer.subscription.created", "customer.subscription.updated",
        "customer.subscription.deleted", "customer.subscription.trial_will_end",
        "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
        "checkout.session.completed",
    }  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated"])
def test_a_customer_is_registered_and_linked_to_its_user(
    uow: MemoryUnitOfWork, event_type: str, shape: str
) -> None:
    """(A customer object reads the same in both API versions.)"""
    obj = so.customer("cus_1", email="a@example.com", name="Ada", user_id=USER)
    assert uow.apply("evt_1", event_type, obj, 100, shape) is Outcome.APPLIED
    customer = uow.get(Customer, Customer.create_id("cus_1"))
    assert customer is not None
    assert (customer.email, customer.name, customer.user_id) == ("a@example.com", "Ada", USER)
    assert uow.new_events() == [
        "Customer.Registered",
        "Customer.DetailsChanged",
        "Customer.LinkedToUser",
    ]


def test_older_customer_details_are_superseded(uow: MemoryUnitOfWork) -> None:
    uow.apply("evt_2", "customer.updated", so.customer("cus_1", email="new@example.com"), 200)
    outcome = uow.apply("evt_1", "customer.created", so.customer("cus_1", email="old@x"), 100)
    assert outcome is Outcome.SUPERSEDED
    assert uow.get(Customer, Customer.create_id("cus_1")).email == "new@example.com"  # type: ignore[union-attr]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_subscription_starts_with_price_period_and_user(
    uow: MemoryUnitOfWork, shape: str
) -> None:
    obj = so.subscription(
        "sub_1", "cus_1", status="trialing", trial_end=1_767_830_400, user_id=USER, shape=shape
    )  # type: ignore[arg-type]
    assert uow.apply("evt_1", "customer.subscription.created", obj, 100, shape) is Outcome.APPLIED
    s = uow.subscription()
    assert (s.status, s.user_id, s.stripe_customer_id) == ("trialing", USER, "cus_1")
    assert s.price == Price(
        "price_premium_monthly", 999, "usd", "month", 1, stripe_product_id="prod_premium"
    )
    assert (s.current_period_start, s.current_period_end) == (1_767_225_600, 1_769_904_000)
    assert s.trial_end == 1_767_830_400
    assert "Subscription.Started" in uow.new_events()


@pytest.mark.parametrize("shape", SHAPES)
def test_a_subscription_update_records_what_changed(uow: MemoryUnitOfWork, shape: str) -> None:
    uow.subscription_event("evt_1", "customer.subscription.created", 100, shape)
    uow.new_events()
    annual = {
        "price_id": "price_annual", "amount": 9990, "interval": "year",
        "period_start": 1_769_904_000, "period_end": 1_801_440_000,
    }  # fmt: skip
    outcome = uow.subscription_event(
        "evt_2", "customer.subscription.updated", 200, shape,
        status="past_due", cancel_at_period_end=True, **annual,
    )  # fmt: skip
    assert outcome is Outcome.APPLIED
    assert uow.new_events() == [
        "Subscription.PlanChanged", "Subscription.PeriodChanged",
        "Subscription.CancellationScheduled", "Subscription.StatusChanged",
    ]  # fmt: skip
    s = uow.subscription()
    assert (s.status, s.price.unit_amount, s.price.interval) == ("past_due", 9990, "year")  # type: ignore[union-attr]
    assert (s.cancel_at_period_end, s.cancel_at) == (True, None)
    uow.subscription_event(
        "evt_3", "customer.subscription.updated", 300, shape, status="active", **annual
    )
    assert uow.new_events() == ["Subscription.CancellationWithdrawn", "Subscription.StatusChanged"]


@pytest.mark.parametrize("shape", SHAPES)
def test_an_older_subscription_state_is_superseded(uow: MemoryUnitOfWork, shape: str) -> None:
    uow.subscription_event("evt_2", "customer.subscription.updated", 200, shape, status="past_due")
    uow.new_events()
    outcome = uow.subscription_event("evt_1", "customer.subscription.created", 100, shape)
    assert outcome is Outcome.SUPERSEDED
    assert uow.subscription().status == "past_due"
    assert uow.new_events() == []


def test_same_second_states_are_ordered_by_event_id(uow: MemoryUnitOfWork) -> None:
    uow.subscription_event("evt_B", "customer.subscription.updated", 100, status="past_due")
    outcome = uow.subscription_event("evt_A", "customer.subscription.updated", 100, status="active")
    assert outcome is Outcome.SUPERSEDED
    assert uow.subscription().status == "past_due"


@pytest.mark.parametrize("shape", SHAPES)
def test_deletion_ends_a_subscription_for_good(uow: MemoryUnitOfWork, shape: str) -> None:
    uow.subscription_event("evt_1", "customer.subscription.created", 100, shape)
    deleted = so.subscription("sub_1", "cus_1", status="canceled", ended_at=200, shape=shape)  # type: ignore[arg-type]
    assert (
        uow.apply("evt_2", "customer.subscription.deleted", deleted, 200, shape) is Outcome.APPLIED
    )
    assert uow.subscription().is_ended and uow.subscription().ended_at == 200
    later = so.subscription("sub_1", "cus_1", status="active", shape=shape)  # type: ignore[arg-type]
    assert (
        uow.apply("evt_3", "customer.subscription.updated", later, 300, shape) is Outcome.SUPERSEDED
    )
    assert uow.subscription().status == "canceled"


@pytest.mark.parametrize("shape", SHAPES)
def test_trial_will_end_warns_once(uow: MemoryUnitOfWork, shape: str) -> None:
    obj = so.subscription("sub_1", "cus_1", status="trialing", trial_end=500, shape=shape)  # type: ignore[arg-type]
    uow.apply("evt_1", "customer.subscription.created", obj, 100, shape)
    uow.new_events()
    assert (
        uow.apply("evt_2", "customer.subscription.trial_will_end", obj, 200, shape)
        is Outcome.APPLIED
    )
    assert "Subscription.TrialEndingSoon" in uow.new_events()
    uow.apply("evt_3", "customer.subscription.trial_will_end", obj, 201, shape)
    assert "Subscription.TrialEndingSoon" not in uow.new_events()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_an_invoice_is_paid_once(uow: MemoryUnitOfWork, shape: str, event_type: str) -> None:
    obj = so.invoice("in_1", "cus_1", "sub_1", amount=999, shape=shape)  # type: ignore[arg-type]
    assert uow.apply("evt_1", event_type, obj, 100, shape) is Outcome.APPLIED
    invoice = uow.get(Invoice, Invoice.create_id("in_1"))
    assert invoice is not None
    assert (invoice.status, invoice.amount_paid, invoice.currency) == ("paid", 999, "usd")
    assert invoice.stripe_subscription_id == "sub_1"
    other = "invoice.payment_succeeded" if event_type == "invoice.paid" else "invoice.paid"
    assert uow.apply("evt_2", other, obj, 101, shape) is Outcome.UNCHANGED


@pytest.mark.parametrize("shape", SHAPES)
def test_a_failed_payment_is_recorded_and_a_late_one_superseded(
    uow: MemoryUnitOfWork, shape: str
) -> None:
    failed = so.invoice("in_1", "cus_1", "sub_1", status="open", attempt_count=1, shape=shape)  # type: ignore[arg-type]
    assert uow.apply("evt_1", "invoice.payment_failed", failed, 100, shape) is Outcome.APPLIED
    invoice = uow.get(Invoice, Invoice.create_id("in_1"))
    assert invoice is not None and invoice.status == "payment_failed"
    assert invoice.stripe_subscription_id == "sub_1"
    uow.apply(
        "evt_2",
        "invoice.paid",
        so.invoice("in_1", "cus_1", "sub_1", shape=shape),
        200,  # type: ignore[arg-type]
        shape,
    )
    assert uow.apply("evt_0", "invoice.payment_failed", failed, 50, shape) is Outcome.SUPERSEDED
    assert invoice.status == "paid"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_checkout_links_the_customer_and_its_earlier_subscription(
    uow: MemoryUnitOfWork, shape: str
) -> None:
    sub = so.subscription("sub_1", "cus_1", shape=shape)  # type: ignore[arg-type]
    uow.apply("evt_1", "customer.subscription.created", sub, 100, shape)
    assert uow.subscription().user_id is None  # recorded although its user is not known yet
    obj = so.checkout_session("cs_1", "cus_1", "sub_1", user_id=USER)
    assert uow.apply("evt_2", "checkout.session.completed", obj, 200, shape) is Outcome.APPLIED
    checkout = uow.get(Checkout, Checkout.create_id("cs_1"))
    assert checkout is not None and (checkout.user_id, checkout.amount_total) == (USER, 999)
    assert uow.subscription().user_id == USER
    assert uow.get(Customer, Customer.create_id("cus_1")).user_id == USER  # type: ignore[union-attr]


def test_a_subscription_is_linked_when_its_customer_is(uow: MemoryUnitOfWork) -> None:
    uow.subscription_event("evt_1", "customer.subscription.created", 100)
    uow.apply("evt_2", "customer.updated", so.customer("cus_1", user_id=USER), 200)
    assert uow.subscription().user_id == USER


def test_an_unhandled_type_is_ignored(uow: MemoryUnitOfWork) -> None:
    assert uow.apply("evt_1", "charge.refunded", {"id": "ch_1"}, 100) is Outcome.IGNORED
    assert uow.aggregates == {}


class RecordingUnitOfWork(MemoryUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[UUID] = set()

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        self.asked.add(aggregate_id)
        return super().get(cls, aggregate_id)


def object_of(event_type: str, shape: str) -> dict[str, Any]:
    """A first event's object of `event_type`, naming cus_1 (and sub_1, in_1)."""
    if event_type.startswith("customer.subscription."):
        return so.subscription("sub_1", "cus_1", shape=shape)  # type: ignore[arg-type]
    if event_type.startswith("customer."):
        return so.customer("cus_1", user_id=USER)
    if event_type.startswith("invoice."):
        return so.invoice("in_1", "cus_1", "sub_1", shape=shape)  # type: ignore[arg-type]
    return so.checkout_session("cs_1", "cus_1", "sub_1", user_id=USER)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("event_type", sorted(TRANSLATORS))
def test_the_loading_hint_names_what_a_first_event_looks_for(event_type: str, shape: str) -> None:
    """Stage two asks the store once per batch which of the named aggregates exist;
    one it did not name costs a query of its own, so the hint should name all."""
    obj = object_of(event_type, shape)
    body = so.body_of(so.event("evt_1", event_type, obj, created=100, shape=shape))  # type: ignore[arg-type]
    event = read_event(body)
    uow = RecordingUnitOfWork()
    translate(uow, event)
    assert uow.asked and uow.asked <= set(aggregates_named(event))


def test_the_loading_hint_names_nothing_for_an_ignored_type() -> None:
    obj = {"id": "po_1", "customer": "cus_1"}
    body = so.body_of(so.event("evt_1", "payout.paid", obj, created=100))
    assert aggregates_named(body) == []


def translated(obj: dict[str, Any], event_type: str, shape: str) -> tuple[Any, ...]:
    """What translating a first event of `obj` does: its outcome, the aggregates'
    new events with their data, and the loading hint."""
    body = so.body_of(so.event("evt_1", event_type, obj, created=100, shape=shape))  # type: ignore[arg-type]
    uow, event = MemoryUnitOfWork(), read_event(body)
    outcome = translate(uow, event)
    events = [
        (type(e).__qualname__, {k: v for k, v in vars(e).items() if k != "timestamp"})
        for a in uow.aggregates.values()
        for e in a.collect_events()
    ]
    return outcome, sorted(events, key=repr), sorted(aggregates_named(event))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("event_type", sorted(TRANSLATORS))
def test_an_object_reads_the_same_with_or_without_its_tag(event_type: str, shape: str) -> None:
    """Stage two reads an object it translates into its model straight from the
    JSON, by its `object` tag; without the tag it reads a dict, as before. Both
    translate alike."""
    obj = object_of(event_type, shape)
    body = so.body_of(so.event("evt_1", event_type, obj, created=100, shape=shape))  # type: ignore[arg-type]
    assert isinstance(read_event(body).envelope.object, BaseModel)  # no dict made of it
    untagged = {k: v for k, v in obj.items() if k != "object"}
    assert translated(obj, event_type, shape) == translated(untagged, event_type, shape)
    assert translated(obj, event_type, shape)[1]  # it did something


def test_an_object_of_another_kind_than_its_event_names_is_refused(uow: MemoryUnitOfWork) -> None:
    invoice = so.invoice("in_1", "cus_1", "sub_1")
    with pytest.raises(ValueError, match="the event's object is of another kind: 'invoice'"):
        uow.apply("evt_1", "customer.subscription.updated", invoice, 100)
    assert uow.aggregates == {}
