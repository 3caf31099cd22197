"""A completed Checkout session: who paid, for which customer and subscription."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.ids import stripe_uuid


@dataclass(frozen=True)
class CheckoutFacts:
    """What Stripe said of a completed Checkout session, in our words."""

    stripe_session_id: str
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    user_id: str | None
    mode: str
    amount_total: int | None
    currency: str | None


class Checkout(Aggregate):
    TOPIC = "ledger.checkout:Checkout"

    class Created(Aggregate.Created):  # the library's default, unused; named for the log
        TOPIC = "ledger.checkout:Checkout.Created"

    class Completed(Aggregate.Created):
        TOPIC = "ledger.checkout:Checkout.Completed"
        stripe_session_id: str
        stripe_customer_id: str | None
        stripe_subscription_id: str | None
        user_id: str | None
        mode: str
        amount_total: int | None
        currency: str | None
        stripe_event_id: str
        stripe_created: int

    @event(Completed)
    def __init__(
        self,
        stripe_session_id: str,
        stripe_customer_id: str | None,
        stripe_subscription_id: str | None,
        user_id: str | None,
        mode: str,
        amount_total: int | None,
        currency: str | None,
        stripe_event_id: str,
        stripe_created: int,
    ) -> None:
        self.stripe_session_id = stripe_session_id
        self.stripe_customer_id = stripe_customer_id
        self.stripe_subscription_id = stripe_subscription_id
        self.user_id = user_id
        self.mode = mode
        self.amount_total = amount_total
        self.currency = currency

    @classmethod
    def record(cls, facts: CheckoutFacts, cause: Cause) -> Checkout:
        return cls(
            **asdict(facts),
            stripe_event_id=cause.stripe_event_id,
            stripe_created=cause.stripe_created,
        )

    @staticmethod
    def create_id(stripe_session_id: str) -> UUID:
        return stripe_uuid("checkout", stripe_session_id)
