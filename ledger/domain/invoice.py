"""An invoice of a subscription: paid, or its payment failed."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.ids import stripe_uuid


@dataclass(frozen=True)
class InvoiceFacts:
    """What Stripe said of an invoice, in our words. Amounts in minor units."""

    stripe_invoice_id: str
    stripe_customer_id: str
    stripe_subscription_id: str | None
    number: str | None
    currency: str
    amount_due: int
    amount_paid: int
    period_start: int | None
    period_end: int | None
    attempt_count: int
    next_payment_attempt: int | None
    hosted_invoice_url: str | None
    billing_reason: str | None


class Invoice(Aggregate):
    TOPIC = "ledger.invoice:Invoice"

    class Created(Aggregate.Created):  # the library's default, unused; named for the log
        TOPIC = "ledger.invoice:Invoice.Created"

    class Recorded(Aggregate.Created):
        TOPIC = "ledger.invoice:Invoice.Recorded"
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
    def __init__(
        self,
        stripe_invoice_id: str,
        stripe_customer_id: str,
        stripe_subscription_id: str | None,
        number: str | None,
        currency: str,
        amount_due: int,
        period_start: int | None,
        period_end: int | None,
        hosted_invoice_url: str | None,
        billing_reason: str | None,
    ) -> None:
        self.stripe_invoice_id = stripe_invoice_id
        self.stripe_customer_id = stripe_customer_id
        self.stripe_subscription_id = stripe_subscription_id
        self.number = number
        self.currency = currency
        self.amount_due = amount_due
        self.period_start = period_start
        self.period_end = period_end
        self.hosted_invoice_url = hosted_invoice_url
        self.billing_reason = billing_reason
        self.status = "open"
        self.amount_paid = 0
        self.last_cause: Cause | None = None

    @staticmethod
    def create_id(stripe_invoice_id: str) -> UUID:
        return stripe_uuid("invoice", stripe_invoice_id)

    @classmethod
    def record(cls, facts: InvoiceFacts) -> Invoice:
        return cls(
            stripe_invoice_id=facts.stripe_invoice_id,
            stripe_customer_id=facts.stripe_customer_id,
            stripe_subscription_id=facts.stripe_subscription_id,
            number=facts.number,
            currency=facts.currency,
            amount_due=facts.amount_due,
            period_start=facts.period_start,
            period_end=facts.period_end,
            hosted_invoice_url=facts.hosted_invoice_url,
            billing_reason=facts.billing_reason,
        )

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
