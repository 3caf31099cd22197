"""The extension's billing actions: register a user, create, cancel and pay for a
subscription. Each action that changes anything is recorded as an event on the
user (who asked, what, and what Stripe answered) before it is answered, with the
request id of the API call that asked (`request_id=`, given by the API; None from
anywhere else)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.domain.catalog import Catalog
from ledger.domain.status import blocks_new_subscription, is_terminal
from ledger.domain.user import USER_ID, User, hash_token
from ledger.stripe.gateway import (
    CanceledSubscription,
    CreatedSubscription,
    StripeError,
    StripeGateway,
)
from ledger.tokens import TokenWatch

T = TypeVar("T")


class AccountError(Exception):
    """A refusal the caller can act on; the API maps each to a status and code."""


class InvalidUserId(AccountError):
    pass


class UserAlreadyRegistered(AccountError):
    pass


class NotAuthenticated(AccountError):
    pass


class Forbidden(AccountError):
    pass


class UnknownPrice(AccountError):
    pass


class BillingCycleMismatch(AccountError):
    pass


class SubscriptionExists(AccountError):
    pass


class NoSubscription(AccountError):
    pass


class ConcurrentRequest(AccountError):
    pass


class StripeNotConfigured(AccountError):
    pass


class UnknownUser(AccountError):
    pass


@dataclass(frozen=True)
class CurrentSubscription:
    """What the read side says of a user's subscription right now."""

    stripe_subscription_id: str
    status: str


class CurrentSubscriptions(Protocol):
    """Where `Accounts` reads a user's current subscription (the read side)."""

    def current(self, user_id: str) -> CurrentSubscription | None: ...


class UserActions:
    """What every service acting for a user shares: the log its actions are
    recorded in, the plan catalog, the gateway to Stripe, and the helpers below."""

    def __init__(self, ledger: Ledger, catalog: Catalog, gateway: StripeGateway | None) -> None:
        self._ledger = ledger
        self._catalog = catalog
        self._gateway = gateway

    def _user(self, user_id: str) -> User:
        return self._ledger.repository.get(User.create_id(user_id))

    def _require_gateway(self) -> StripeGateway:
        if self._gateway is None:
            raise StripeNotConfigured("STRIPE_SECRET_KEY is not set: billing actions are off")
        return self._gateway

    def _protect(self, stripe_customer_id: str | None, value: str | None) -> str | None:
        """A personal value the user gave (an email, a name, a URL to return to), as
        it is to be recorded: encrypted with its Stripe customer's key, so that
        erasing the customer erases it too."""
        return self._ledger.personal.protect(stripe_customer_id or None, value)

    def _data_subject(self, user: User) -> str | None:
        """The Stripe customer whose key guards this user's personal values."""
        return user.stripe_customer_id

    def _record_failure(
        self, user: User, action: str, exc: StripeError, request_id: str | None
    ) -> None:
        # Stripe's message may quote what was sent (an email): held like other
        # personal values, under the customer's key, so an erasure takes it too
        message = self._protect(self._data_subject(user), exc.message[:300])
        user.stripe_call_failed(action, exc.code, message, request_id)
        self._save(user)

    def _save(self, user: User) -> None:
        try:
            self._ledger.save(user)
        except IntegrityError:
            self._ledger.forget()
            raise ConcurrentRequest(
                "another request for this user was recorded first; retry"
            ) from None


class Accounts(UserActions):
    def __init__(
        self,
        ledger: Ledger,
        catalog: Catalog,
        gateway: StripeGateway | None,
        subscriptions: CurrentSubscriptions,
    ) -> None:
        super().__init__(ledger, catalog, gateway)
        self._subscriptions = subscriptions
        # user id -> token hash ("" once revoked); trusted only while `tokens` follows
        # the log, which evicts a user whose token was rotated or revoked anywhere
        self._token_hashes: dict[str, str] = {}
        self._names: dict[UUID, str] = {}  # User aggregate id -> user id, of those kept
        self._epoch = 0  # moves whenever a kept token hash is forgotten
        self._lock = threading.Lock()
        self.tokens = TokenWatch(ledger, self._forget_aggregates)

    # --- identity -----------------------------------------------------------------

    def register(self, user_id: str, *, request_id: str | None = None) -> str:
        """Register an extension's own id once; returns its token (only a hash is kept)."""
        if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
            raise InvalidUserId(
                "user_id must look like user_{unix seconds}_{10 lowercase letters or digits}"
            )
        token = secrets.token_urlsafe(32)
        try:
            self._ledger.save(
                User(user_id=user_id, token_hash=hash_token(token), request_id=request_id)
            )
        except IntegrityError:
            raise UserAlreadyRegistered(f"{user_id} is already registered") from None
        return token

    def rotate_token(self, user_id: str, *, request_id: str | None = None) -> str:
        """A new token for an authenticated user; the previous one is refused from now
        on (here at once, in other processes as soon as their `TokenWatch` reads it)."""
        user = self._user(user_id)
        token = secrets.token_urlsafe(32)
        user.rotate_token(hash_token(token), request_id)
        self._save(user)
        self._forget_tokens([user_id])
        return token

    def revoke_tokens(self, user_id: str, *, request_id: str | None = None) -> None:
        """Refuse every token of a user from now on (an operator's call)."""
        if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
            raise UnknownUser(f"no user {user_id[:64]!r}")
        try:
            user = self._user(user_id)
        except AggregateNotFoundError:
            raise UnknownUser(f"no user {user_id}") from None
        user.revoke_tokens(request_id)
        self._save(user)
        self._forget_tokens([user_id])

    def authenticate(self, user_id: str | None, token: str | None) -> str:
        """The user id, when `token` is that user's current token. Reads the log once
        per user while this process follows the log's token events."""
        known = self.authenticated_from_memory(user_id, token)
        if known is not None:
            return known
        assert user_id is not None
        epoch = self._epoch
        try:
            expected = self._user(user_id).token_hash or ""
        except AggregateNotFoundError:
            raise NotAuthenticated("unknown user or wrong token") from None
        if self.tokens.is_current():
            with self._lock:
                if len(self._token_hashes) > 200_000:
                    self._token_hashes.clear()
                    self._names.clear()
                if self._epoch == epoch:  # no token forgotten while we read
                    self._token_hashes[user_id] = expected
                    self._names[User.create_id(user_id)] = user_id
        if not expected or not secrets.compare_digest(expected, hash_token(token or "")):
            raise NotAuthenticated("unknown user or wrong token")
        return user_id

    def authenticated_from_memory(self, user_id: str | None, token: str | None) -> str | None:
        """`authenticate` without reading the log: the user id, or None when this
        user's token hash is not in memory (or memory may be stale: then call
        `authenticate`)."""
        if not user_id or not token or not USER_ID.fullmatch(user_id):
            raise NotAuthenticated("X-User-ID and Authorization: Bearer <token> are required")
        expected = self._token_hashes.get(user_id)
        if expected is None or not self.tokens.is_current():
            return None
        if not expected or not secrets.compare_digest(expected, hash_token(token)):
            raise NotAuthenticated("unknown user or wrong token")
        return user_id

    def _forget_tokens(self, user_ids: list[str]) -> None:
        with self._lock:
            self._epoch += 1
            for user_id in user_ids:
                self._token_hashes.pop(user_id, None)

    def _forget_aggregates(self, aggregate_ids: list[UUID]) -> None:
        with self._lock:
            self._epoch += 1
            for aggregate_id in aggregate_ids:
                user_id = self._names.pop(aggregate_id, None)
                if user_id is not None:
                    self._token_hashes.pop(user_id, None)

    # --- billing actions ------------------------------------------------------------

    def create_subscription(
        self,
        user_id: str,
        body_user_id: str,
        price_id: str,
        billing_cycle: str,
        return_url: str | None,
        *,
        request_id: str | None = None,
    ) -> CreatedSubscription:
        if body_user_id != user_id:
            raise Forbidden("user_id in the body is not the caller's")
        found = self._catalog.find(price_id)
        if found is None:
            raise UnknownPrice(f"{price_id} is not a price of any plan")
        if found[1].interval != billing_cycle:
            raise BillingCycleMismatch(
                f"{price_id} is billed every {found[1].interval}, not every {billing_cycle}"
            )
        current = self._subscriptions.current(user_id)
        user = self._user(user_id)
        live = self._current(user, current)
        if live is not None and blocks_new_subscription(live.status):
            raise SubscriptionExists(
                f"{user_id} already has subscription {live.stripe_subscription_id} ({live.status})"
            )
        gateway = self._require_gateway()
        try:
            if user.stripe_customer_id is None:
                key = user.idempotency_key("create_customer")
                user.customer_created(gateway.create_customer(user_id, key), request_id)
            key = user.idempotency_key("create_subscription", price_id)
            created = gateway.create_subscription(
                user.stripe_customer_id or "", price_id, user_id, key
            )
        except StripeError as exc:
            self._record_failure(user, "create_subscription", exc, request_id)
            raise
        user.subscription_created(
            price_id,
            billing_cycle,
            self._protect(user.stripe_customer_id, return_url),
            created.stripe_subscription_id,
            created.status,
            request_id,
        )
        self._save(user)
        return created

    def cancel(
        self, user_id: str, immediate: bool, *, request_id: str | None = None
    ) -> CanceledSubscription:
        current = self._subscriptions.current(user_id)
        user = self._user(user_id)
        live = self._current(user, current)
        if live is None or is_terminal(live.status):
            raise NoSubscription(f"{user_id} has no subscription to cancel")
        gateway = self._require_gateway()
        try:
            canceled = gateway.cancel(
                live.stripe_subscription_id,
                immediate=immediate,
                idempotency_key=user.idempotency_key("cancel", live, immediate),
            )
        except StripeError as exc:
            self._record_failure(user, "cancel_subscription", exc, request_id)
            raise
        user.cancellation_requested(
            canceled.stripe_subscription_id,
            immediate,
            canceled.status,
            canceled.effective_at,
            request_id,
        )
        self._save(user)
        return canceled

    def update_payment_method(
        self, user_id: str, payment_method_id: str, *, request_id: str | None = None
    ) -> str:
        current = self._subscriptions.current(user_id)
        user = self._user(user_id)
        live = self._current(user, current)
        if live is None or is_terminal(live.status):
            raise NoSubscription(f"{user_id} has no subscription to pay for")
        gateway = self._require_gateway()
        try:
            gateway.set_default_payment_method(
                user.stripe_customer_id or "",
                live.stripe_subscription_id,
                payment_method_id,
                user.idempotency_key("update_payment_method", live, payment_method_id),
            )
        except StripeError as exc:
            self._record_failure(user, "update_payment_method", exc, request_id)
            raise
        user.payment_method_updated(live.stripe_subscription_id, payment_method_id, request_id)
        self._save(user)
        return live.stripe_subscription_id

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _current(user: User, current: CurrentSubscription | None) -> CurrentSubscription | None:
        """The read side's answer; else the subscription this user just created
        through us, whose webhooks have not arrived yet."""
        if current is not None:
            return current
        if user.last_subscription is not None:
            return CurrentSubscription(*user.last_subscription)
        return None
