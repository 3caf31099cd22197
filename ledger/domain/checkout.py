"""A completed Checkout session: who paid, for which customer and subscription."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.facts import assign, takes_fields_of, values_of
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
    class Completed(CheckoutFacts, Aggregate.Created):
        TOPIC = "ledger.checkout:Checkout.Completed"
        stripe_event_id: str
        stripe_created: int

    @event(Completed)
    @takes_fields_of(Completed)
    def __init__(self, **completed: Any) -> None:
        assign(self, CheckoutFacts, completed)

    @classmethod
    def record(cls, facts: CheckoutFacts, cause: Cause) -> Checkout:
        return cls(
            **values_of(facts),
            stripe_event_id=cause.stripe_event_id,
            stripe_created=cause.stripe_created,
        )

    @staticmethod
    def create_id(stripe_session_id: str) -> UUID:
        return stripe_uuid("checkout", stripe_session_id)

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.checkout:Checkout"

    class Created(Aggregate.Created):
        TOPIC = "ledger.checkout:Checkout.Created"
