"""The anti-corruption layer's deciding half: one translator per handled Stripe
event type, each turning a verified event into commands on our aggregates. Callers
hand it a receipt's payload (or the `StripeEvent` read from it) and get our own
values back: Stripe's JSON does not leave this layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.domain.cause import Cause
from ledger.domain.checkout import Checkout
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice, InvoiceFacts
from ledger.domain.receipt import Outcome
from ledger.domain.subscription import Subscription, SubscriptionState
from ledger.stripe.payloads import (
    Envelope,
    named_ids,
    read_checkout,
    read_customer,
    read_envelope,
    read_invoice,
    read_subscription,
)

A = TypeVar("A", bound=Aggregate)


class UnitOfWork(Protocol):
    """The aggregates one delivery touches; saved together, or not at all."""

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None: ...

    def add(self, aggregate: Aggregate) -> None: ...

    def protect(self, subject: str, value: str | None) -> str | None:
        """A personal value as it is to be stored (encrypted with the subject's key)."""
        ...


Translator = Callable[[UnitOfWork, Envelope], Outcome]


@dataclass(frozen=True, slots=True)
class StripeEvent:
    """A Stripe event read from a receipt's payload, once: `aggregates_named` and
    `translate` both take it, so that a batch reads each payload one time. What
    it holds is this layer's business."""

    envelope: Envelope


Payload = str | bytes | StripeEvent


def read_event(payload: Payload) -> StripeEvent:
    """Raises NotAnEvent when the payload is not a Stripe event."""
    if isinstance(payload, StripeEvent):
        return payload
    return StripeEvent(read_envelope(payload))


def translate(uow: UnitOfWork, payload: Payload) -> Outcome:
    """Apply one Stripe event. APPLIED means "may have changed something": the
    caller turns it into UNCHANGED when no aggregate has new events."""
    envelope = read_event(payload).envelope
    translator = TRANSLATORS.get(envelope.type)
    return translator(uow, envelope) if translator else Outcome.IGNORED


def _cause(envelope: Envelope) -> Cause:
    return Cause(envelope.created, envelope.id)


def _customer(uow: UnitOfWork, stripe_customer_id: str) -> Customer:
    customer = uow.get(Customer, Customer.create_id(stripe_customer_id))
    if customer is None:
        customer = Customer(stripe_customer_id=stripe_customer_id)
        uow.add(customer)
    return customer


def _link(uow: UnitOfWork, customer: Customer, user_id: str | None, cause: Cause) -> None:
    """Link a customer to its user, and every subscription it holds that has none."""
    if user_id is None or not customer.link_to_user(user_id, cause):
        return
    for stripe_subscription_id in customer.stripe_subscription_ids:
        subscription = uow.get(Subscription, Subscription.create_id(stripe_subscription_id))
        if subscription is not None:
            subscription.link_to_user(user_id)


def _customer_changed(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    stripe_customer_id, email, name, user_id = read_customer(envelope.object)
    cause = _cause(envelope)
    customer = _customer(uow, stripe_customer_id)
    newer = customer.change_details(
        uow.protect(stripe_customer_id, email), uow.protect(stripe_customer_id, name), cause
    )
    _link(uow, customer, user_id, cause)
    return Outcome.APPLIED if newer else Outcome.SUPERSEDED


def _subscription_changed(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    return _follow_subscription(uow, read_subscription(envelope.object), _cause(envelope))[1]


def _follow_subscription(
    uow: UnitOfWork, state: SubscriptionState, cause: Cause
) -> tuple[Subscription, Outcome]:
    customer = _customer(uow, state.stripe_customer_id)
    customer.add_subscription(state.stripe_subscription_id)
    _link(uow, customer, state.user_id, cause)
    user_id = state.user_id or customer.user_id
    subscription = uow.get(Subscription, Subscription.create_id(state.stripe_subscription_id))
    if subscription is None:
        subscription = Subscription.start(replace(state, user_id=user_id), cause)
        uow.add(subscription)
        return subscription, Outcome.APPLIED
    if user_id is not None:
        subscription.link_to_user(user_id)
    applied = subscription.apply_state(state, cause)
    return subscription, Outcome.APPLIED if applied else Outcome.SUPERSEDED


def _trial_will_end(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    state, cause = read_subscription(envelope.object), _cause(envelope)
    subscription, outcome = _follow_subscription(uow, state, cause)
    return Outcome.APPLIED if subscription.warn_trial_ending(state.trial_end, cause) else outcome


def _invoice_paid(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    facts = read_invoice(envelope.object)
    invoice = _recorded_invoice(uow, facts)
    return Outcome.APPLIED if invoice.mark_paid(facts, _cause(envelope)) else Outcome.UNCHANGED


def _invoice_payment_failed(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    facts = read_invoice(envelope.object)
    invoice = _recorded_invoice(uow, facts)
    failed = invoice.record_payment_failure(facts, _cause(envelope))
    return Outcome.APPLIED if failed else Outcome.SUPERSEDED


def _recorded_invoice(uow: UnitOfWork, facts: InvoiceFacts) -> Invoice:
    _customer(uow, facts.stripe_customer_id)
    invoice = uow.get(Invoice, Invoice.create_id(facts.stripe_invoice_id))
    if invoice is None:
        invoice = Invoice.record(facts)
        uow.add(invoice)
    return invoice


def _checkout_completed(uow: UnitOfWork, envelope: Envelope) -> Outcome:
    facts = read_checkout(envelope.object)
    cause = _cause(envelope)
    if facts.stripe_customer_id is not None:
        customer = _customer(uow, facts.stripe_customer_id)
        if facts.stripe_subscription_id is not None:
            customer.add_subscription(facts.stripe_subscription_id)
        _link(uow, customer, facts.user_id, cause)
    if uow.get(Checkout, Checkout.create_id(facts.stripe_session_id)) is not None:
        return Outcome.UNCHANGED
    uow.add(Checkout.record(facts, cause))
    return Outcome.APPLIED


# --- reconciliation: Stripe's objects as fetched, in our words --------------------


def reconcile_subscription(
    uow: UnitOfWork, state: SubscriptionState, drifted: list[str], cause: Cause
) -> bool:
    """Follow a subscription as `ledger reconcile --fix` fetched it, as a webhook
    would be followed, recording a ReconciledFromStripe first. False when the
    ledger holds a newer (or an ended) state."""
    customer = _customer(uow, state.stripe_customer_id)
    customer.add_subscription(state.stripe_subscription_id)
    _link(uow, customer, state.user_id, cause)
    user_id = state.user_id or customer.user_id
    subscription = uow.get(Subscription, Subscription.create_id(state.stripe_subscription_id))
    if subscription is None:
        uow.add(Subscription.discover(replace(state, user_id=user_id), cause))
        return True
    if user_id is not None:
        subscription.link_to_user(user_id)
    return subscription.reconcile(state, drifted, cause)


def reconcile_customer(
    uow: UnitOfWork,
    stripe_customer_id: str,
    details: tuple[str | None, str | None, str | None],
    drifted: list[str],
    cause: Cause,
) -> bool:
    """Follow a customer as fetched: `details` are (email, name, user id)."""
    email, name, user_id = details
    customer = _customer(uow, stripe_customer_id)
    unlinked = customer.user_id is None
    fixed = customer.reconcile(email, name, user_id, drifted, cause)
    if unlinked and customer.user_id is not None:
        for stripe_subscription_id in customer.stripe_subscription_ids:
            subscription = uow.get(Subscription, Subscription.create_id(stripe_subscription_id))
            if subscription is not None:
                subscription.link_to_user(customer.user_id)
    return fixed


TRANSLATORS: dict[str, Translator] = {
    "customer.created": _customer_changed,
    "customer.updated": _customer_changed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "customer.subscription.trial_will_end": _trial_will_end,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "checkout.session.completed": _checkout_completed,
}

_AGGREGATE_OF_ID: dict[str, type[Customer | Subscription | Invoice | Checkout]] = {
    "cus_": Customer,
    "sub_": Subscription,
    "in_": Invoice,
    "cs_": Checkout,
}


def aggregates_named(payload: Payload) -> list[UUID]:
    """The aggregates translating this event will look for, at least most of them:
    a hint for loading them together (what it misses is loaded on its own)."""
    envelope = read_event(payload).envelope
    if envelope.type not in TRANSLATORS:
        return []
    return [
        cls.create_id(stripe_id)
        for stripe_id in named_ids(envelope.object)
        for prefix, cls in _AGGREGATE_OF_ID.items()
        if stripe_id.startswith(prefix)
    ]
