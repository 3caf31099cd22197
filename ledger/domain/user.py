"""A user of the browser extension: registered once with its own id, holding a
hash of its token, and every billing action it asked for with Stripe's answer.
Each event is recorded by an API call (the user's, or an operator's) and carries
its request id (`ApiCaused`; None when recorded otherwise, or before it was kept)."""

from __future__ import annotations

import hashlib
import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import ApiCaused
from ledger.domain.ids import user_uuid

USER_ID = re.compile(r"^user_[0-9]{1,12}_[a-z0-9]{10}$")


def hash_token(token: str) -> str:
    """Tokens are 256 random bits: a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


class User(Aggregate):
    class Registered(ApiCaused, Aggregate.Created):
        TOPIC = "ledger.user:User.Registered"
        user_id: str
        token_hash: str

    class CustomerCreated(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.CustomerCreated"
        stripe_customer_id: str

    class SubscriptionCreated(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.SubscriptionCreated"
        price_id: str
        billing_cycle: str
        return_url: str | None
        stripe_subscription_id: str
        stripe_status: str

    class CancellationRequested(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.CancellationRequested"
        stripe_subscription_id: str
        immediate: bool
        stripe_status: str
        effective_at: int | None

    class PaymentMethodUpdated(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.PaymentMethodUpdated"
        stripe_subscription_id: str
        payment_method_id: str

    class CustomerDetailsUpdated(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.CustomerDetailsUpdated"
        stripe_customer_id: str
        email: str | None  # as Stripe answered
        name: str | None

    class PlanChangeRequested(ApiCaused, Aggregate.Event):
        """An upgrade (made now, prorated) or a downgrade (a Stripe subscription
        schedule switches the price when the period ends)."""

        TOPIC = "ledger.user:User.PlanChangeRequested"
        stripe_subscription_id: str
        from_price_id: str | None
        to_price_id: str
        change: str  # "upgrade" | "downgrade"
        effective_at: int | None  # None: now
        proration_behavior: str | None  # upgrades
        stripe_schedule_id: str | None  # downgrades
        stripe_status: str

    class ResumeRequested(ApiCaused, Aggregate.Event):
        """A scheduled cancellation withdrawn, and/or a pending downgrade dropped."""

        TOPIC = "ledger.user:User.ResumeRequested"
        stripe_subscription_id: str
        withdrew_cancellation: bool
        released_schedule_id: str | None
        stripe_status: str

    class CheckoutStarted(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.CheckoutStarted"
        stripe_session_id: str
        stripe_customer_id: str
        price_id: str
        success_url: str
        cancel_url: str

    class PortalOpened(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.PortalOpened"
        stripe_customer_id: str
        return_url: str

    class StripeCallFailed(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.StripeCallFailed"
        action: str
        error_code: str
        message: str

    class TokenRotated(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.TokenRotated"
        token_hash: str

    class TokensRevoked(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.user:User.TokensRevoked"

    # Every command method takes the request id of the API call that asks for it
    # (the library's @event checks each call against the method's signature).

    @event(Registered)
    def __init__(self, user_id: str, token_hash: str, request_id: str | None = None) -> None:
        self.user_id = user_id
        self.token_hash: str | None = token_hash  # None: every token revoked
        self.stripe_customer_id: str | None = None
        self.last_subscription: tuple[str, str] | None = None  # (stripe id, status)
        self.actions = 0  # billing actions Stripe carried out for this user

    @staticmethod
    def create_id(user_id: str) -> UUID:
        return user_uuid(user_id)

    def idempotency_key(self, action: str, *params: object) -> str:
        """A key for Stripe derived from our own events: the user's id, how many
        billing actions it has completed, and what is asked now. A retry of a
        request whose outcome we never learned (or a concurrent twin) reuses it, so
        Stripe acts once; a recorded failure does not change it; a different
        request gets another."""
        asked = hashlib.sha256(repr((action, params)).encode()).hexdigest()[:16]
        return f"{self.id}:{self.actions + 1}:{asked}"

    @event(CustomerCreated)
    def customer_created(self, stripe_customer_id: str, request_id: str | None = None) -> None:
        self.stripe_customer_id = stripe_customer_id
        self.actions += 1

    @event(SubscriptionCreated)
    def subscription_created(
        self,
        price_id: str,
        billing_cycle: str,
        return_url: str | None,
        stripe_subscription_id: str,
        stripe_status: str,
        request_id: str | None = None,
    ) -> None:
        self.last_subscription = (stripe_subscription_id, stripe_status)
        self.actions += 1

    @event(CancellationRequested)
    def cancellation_requested(
        self,
        stripe_subscription_id: str,
        immediate: bool,
        stripe_status: str,
        effective_at: int | None,
        request_id: str | None = None,
    ) -> None:
        if self.last_subscription and self.last_subscription[0] == stripe_subscription_id:
            self.last_subscription = (stripe_subscription_id, stripe_status)
        self.actions += 1

    @event(PaymentMethodUpdated)
    def payment_method_updated(
        self, stripe_subscription_id: str, payment_method_id: str, request_id: str | None = None
    ) -> None:
        self.actions += 1

    @event(CustomerDetailsUpdated)
    def customer_details_updated(
        self,
        stripe_customer_id: str,
        email: str | None,
        name: str | None,
        request_id: str | None = None,
    ) -> None:
        self.actions += 1

    @event(PlanChangeRequested)
    def plan_change_requested(
        self,
        stripe_subscription_id: str,
        from_price_id: str | None,
        to_price_id: str,
        change: str,
        effective_at: int | None,
        proration_behavior: str | None,
        stripe_schedule_id: str | None,
        stripe_status: str,
        request_id: str | None = None,
    ) -> None:
        self.actions += 1

    @event(ResumeRequested)
    def resume_requested(
        self,
        stripe_subscription_id: str,
        withdrew_cancellation: bool,
        released_schedule_id: str | None,
        stripe_status: str,
        request_id: str | None = None,
    ) -> None:
        if self.last_subscription and self.last_subscription[0] == stripe_subscription_id:
            self.last_subscription = (stripe_subscription_id, stripe_status)
        self.actions += 1

    @event(CheckoutStarted)
    def checkout_started(
        self,
        stripe_session_id: str,
        stripe_customer_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        request_id: str | None = None,
    ) -> None:
        self.actions += 1

    @event(PortalOpened)
    def portal_opened(
        self, stripe_customer_id: str, return_url: str, request_id: str | None = None
    ) -> None:
        self.actions += 1

    @event(StripeCallFailed)
    def stripe_call_failed(
        self, action: str, error_code: str, message: str, request_id: str | None = None
    ) -> None:
        pass

    @event(TokenRotated)
    def rotate_token(self, token_hash: str, request_id: str | None = None) -> None:
        self.token_hash = token_hash

    @event(TokensRevoked)
    def revoke_tokens(self, request_id: str | None = None) -> None:
        self.token_hash = None

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.user:User"

    class Created(Aggregate.Created):
        TOPIC = "ledger.user:User.Created"
