"""A Stripe customer, the user it belongs to, and the subscriptions it holds."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.ids import stripe_uuid


class Customer(Aggregate):
    class Registered(Aggregate.Created):
        TOPIC = "ledger.customer:Customer.Registered"
        stripe_customer_id: str

    class DetailsChanged(Aggregate.Event):
        TOPIC = "ledger.customer:Customer.DetailsChanged"
        email: str | None
        name: str | None
        stripe_event_id: str
        stripe_created: int

    class LinkedToUser(Aggregate.Event):
        TOPIC = "ledger.customer:Customer.LinkedToUser"
        user_id: str
        stripe_event_id: str
        stripe_created: int

    class SubscriptionAdded(Aggregate.Event):
        TOPIC = "ledger.customer:Customer.SubscriptionAdded"
        stripe_subscription_id: str

    class ReconciledFromStripe(Aggregate.Event):
        """The customer as `ledger reconcile --fix` fetched it from Stripe, and the
        fields where the ledger differed; the changes follow with the same cause."""

        TOPIC = "ledger.customer:Customer.ReconciledFromStripe"
        email: str | None
        name: str | None
        user_id: str | None
        drifted: list[str]
        stripe_event_id: str  # the reconciliation run's cause id ("reconcile_...")
        stripe_created: int  # the fetch time, unix seconds

    @event(Registered)
    def __init__(self, stripe_customer_id: str) -> None:
        self.stripe_customer_id = stripe_customer_id
        self.email: str | None = None
        self.name: str | None = None
        self.user_id: str | None = None
        self.details_cause: Cause | None = None
        self.stripe_subscription_ids: list[str] = []

    @staticmethod
    def create_id(stripe_customer_id: str) -> UUID:
        return stripe_uuid("customer", stripe_customer_id)

    def change_details(self, email: str | None, name: str | None, cause: Cause) -> bool:
        """Follow the newest details. Recorded even when equal, so that an older
        delivery arriving later is still seen to be older after a replay."""
        if not cause.newer_than(self.details_cause):
            return False
        self._details_changed(email, name, cause.stripe_event_id, cause.stripe_created)
        return True

    def link_to_user(self, user_id: str, cause: Cause) -> bool:
        """A customer belongs to one user: the first user id seen links it."""
        if self.user_id is not None:
            return False
        self._linked_to_user(user_id, cause.stripe_event_id, cause.stripe_created)
        return True

    def reconcile(
        self,
        email: str | None,
        name: str | None,
        user_id: str | None,
        drifted: list[str],
        cause: Cause,
    ) -> bool:
        """Follow Stripe's customer as fetched at `cause`: its details when newer
        than those held, its user when none is linked yet (the first user stays)."""
        newer = cause.newer_than(self.details_cause)
        links = user_id is not None and self.user_id is None
        if not (newer or links):
            return False
        self._reconciled_from_stripe(
            email, name, user_id, list(drifted), cause.stripe_event_id, cause.stripe_created
        )
        if newer:
            self.change_details(email, name, cause)
        if links:
            self.link_to_user(user_id, cause)  # type: ignore[arg-type]
        return True

    def add_subscription(self, stripe_subscription_id: str) -> bool:
        if stripe_subscription_id in self.stripe_subscription_ids:
            return False
        self._subscription_added(stripe_subscription_id)
        return True

    @event(DetailsChanged)
    def _details_changed(self, email, name, stripe_event_id, stripe_created) -> None:
        self.email, self.name = email, name
        self.details_cause = Cause(stripe_created, stripe_event_id)

    @event(ReconciledFromStripe)
    def _reconciled_from_stripe(
        self, email, name, user_id, drifted, stripe_event_id, stripe_created
    ) -> None:
        pass  # the changes follow as events of their own

    @event(LinkedToUser)
    def _linked_to_user(self, user_id, stripe_event_id, stripe_created) -> None:
        self.user_id = user_id

    @event(SubscriptionAdded)
    def _subscription_added(self, stripe_subscription_id) -> None:
        self.stripe_subscription_ids.append(stripe_subscription_id)

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.customer:Customer"

    class Created(Aggregate.Created):
        TOPIC = "ledger.customer:Customer.Created"
