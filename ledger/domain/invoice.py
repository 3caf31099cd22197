"""An invoice of a subscription: paid, or its payment failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.facts import assign, takes_fields_of, values_of
from ledger.domain.ids import stripe_uuid


@dataclass(frozen=True)
class InvoiceDetails:
    """What an invoice is for, recorded once, when it is first seen. Amounts in
    minor units."""

    stripe_invoice_id: str
    stripe_customer_id: str
    stripe_subscription_id: str | None
    number: str | None
    currency: str
    amount_due: int
    period_start: int | None
    period_end: int | None
    hosted_invoice_url: str | None
    billing_reason: str | None
    created: int | None  # Stripe's invoice `created`, unix seconds (None: recorded before v2)


@dataclass(frozen=True)
class InvoiceFacts(InvoiceDetails):
    """What Stripe said of an invoice, in our words: its details, and where its
    payment stands."""

    amount_paid: int
    attempt_count: int
    next_payment_attempt: int | None


class Invoice(Aggregate):
    class Recorded(InvoiceDetails, Aggregate.Created):
        TOPIC = "ledger.invoice:Invoice.Recorded"
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 did not record when Stripe created the invoice."""
            state["created"] = None

    class Paid(Aggregate.Event):
        TOPIC = "ledger.invoice:Invoice.Paid"
        amount_paid: int
        currency: str
        stripe_event_id: str
        stripe_created: int

    class PaymentFailed(Aggregate.Event):
        TOPIC = "ledger.invoice:Invoice.PaymentFailed"
        amount_due: int
        currency: str
        attempt_count: int
        next_payment_attempt: int | None
        stripe_event_id: str
        stripe_created: int

    @event(Recorded)
    @takes_fields_of(Recorded)
    def __init__(self, **recorded: Any) -> None:
        assign(self, InvoiceDetails, recorded)
        self.status = "open"
        self.amount_paid = 0
        self.last_cause: Cause | None = None

    @staticmethod
    def create_id(stripe_invoice_id: str) -> UUID:
        return stripe_uuid("invoice", stripe_invoice_id)

    @classmethod
    def record(cls, facts: InvoiceFacts) -> Invoice:
        return cls(**values_of(facts, InvoiceDetails))

    @property
    def is_paid(self) -> bool:
        return self.status == "paid"

    def mark_paid(self, facts: InvoiceFacts, cause: Cause) -> bool:
        """Paid is final: `invoice.paid` and `invoice.payment_succeeded` of one
        payment record it once."""
        if self.is_paid:
            return False
        self._paid(facts.amount_paid, facts.currency, cause.stripe_event_id, cause.stripe_created)
        return True

    def record_payment_failure(self, facts: InvoiceFacts, cause: Cause) -> bool:
        if self.is_paid or not cause.newer_than(self.last_cause):
            return False
        self._payment_failed(
            facts.amount_due,
            facts.currency,
            facts.attempt_count,
            facts.next_payment_attempt,
            cause.stripe_event_id,
            cause.stripe_created,
        )
        return True

    @event(Paid)
    def _paid(self, amount_paid, currency, stripe_event_id, stripe_created) -> None:
        self.status = "paid"
        self.amount_paid = amount_paid
        self.last_cause = Cause(stripe_created, stripe_event_id)

    @event(PaymentFailed)
    def _payment_failed(
        self,
        amount_due,
        currency,
        attempt_count,
        next_payment_attempt,
        stripe_event_id,
        stripe_created,
    ) -> None:
        self.status = "payment_failed"
        self.attempt_count = attempt_count
        self.last_cause = Cause(stripe_created, stripe_event_id)

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.invoice:Invoice"

    class Created(Aggregate.Created):
        TOPIC = "ledger.invoice:Invoice.Created"
