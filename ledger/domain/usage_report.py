"""The report of one user's overage of one metric for one billing period to
Stripe: at most one per user, metric and period, holding what Stripe answered."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import NAMESPACE


def report_key(user_id: str, metric: str, period_start: int) -> str:
    """The idempotency key of the report, for Stripe and for the log alike."""
    return f"usage-{user_id}-{metric}-{period_start}"


class UsageReport(Aggregate):
    class Reported(Aggregate.Created):
        TOPIC = "ledger.usage_report:UsageReport.Reported"
        user_id: str
        metric: str
        period_start: int
        period_end: int
        used: int
        included: int
        overage: int  # units over the included amount
        amount: int  # minor units
        currency: str
        stripe_customer_id: str
        stripe_object: str  # "billing.meter_event" or "invoiceitem"
        stripe_id: str  # Stripe's answer: the invoice item's id, the meter event's identifier

    @event(Reported)
    def __init__(
        self,
        user_id: str,
        metric: str,
        period_start: int,
        period_end: int,
        used: int,
        included: int,
        overage: int,
        amount: int,
        currency: str,
        stripe_customer_id: str,
        stripe_object: str,
        stripe_id: str,
    ) -> None:
        self.user_id, self.metric = user_id, metric
        self.period_start, self.period_end = period_start, period_end
        self.overage, self.amount, self.currency = overage, amount, currency
        self.stripe_object, self.stripe_id = stripe_object, stripe_id

    @staticmethod
    def create_id(user_id: str, metric: str, period_start: int) -> UUID:
        return uuid5(NAMESPACE, report_key(user_id, metric, period_start))

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.usage_report:UsageReport"

    class Created(Aggregate.Created):
        TOPIC = "ledger.usage_report:UsageReport.Created"
