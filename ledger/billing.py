"""The billing API's actions: the customer's details, a subscription's life
(create with a trial, upgrade now, downgrade at the period end, cancel, resume),
Checkout and Customer Portal sessions. Each is recorded as a `User` event, with
what Stripe answered and the request id of the API call that asked (`request_id=`),
before it is answered; the state it causes arrives by webhook."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.accounts import (
    AccountError,
    NoSubscription,
    SubscriptionExists,
    UnknownPrice,
    UserActions,
)
from ledger.application import Ledger
from ledger.domain.catalog import Catalog, CatalogPrice, Plan
from ledger.domain.status import blocks_new_subscription, is_terminal
from ledger.domain.user import User
from ledger.stripe.gateway import (
    CanceledSubscription,
    ChangedSubscription,
    CreatedSubscription,
    CustomerDetails,
    Session,
    StripeError,
    StripeGateway,
)


class CustomerNotFound(AccountError):
    pass


class NothingToResume(AccountError):
    pass


class InvalidRedirect(AccountError):
    pass


class CurrencyMismatch(AccountError):
    pass


@dataclass(frozen=True)
class BillingState:
    """What the read side says of a user's current subscription, for decisions."""

    stripe_subscription_id: str
    status: str
    price_id: str | None
    currency: str | None
    cancel_at_period_end: bool
    cancel_at: int | None
    pending_price_id: str | None = None
    pending_schedule_id: str | None = None


class BillingReads(Protocol):
    """Where `Billing` reads the user's customer and subscription (the read side)."""

    def billing_state(self, user_id: str) -> BillingState | None: ...

    def customer_id(self, user_id: str) -> str | None: ...


@dataclass(frozen=True)
class PlanChange:
    change: str  # "upgrade" | "downgrade" | "same"
    effective: str  # "now" | "period_end"
    stripe_subscription_id: str
    price_id: str
    plan_id: str
    effective_at: int | None
    proration_behavior: str | None
    status: str


@dataclass(frozen=True)
class Resumed:
    stripe_subscription_id: str
    status: str
    withdrew_cancellation: bool
    withdrew_pending_change: bool


_INTERVALS = {"day": 0, "week": 1, "month": 2, "year": 3}


def classify(
    current: tuple[Plan, CatalogPrice] | None, new: tuple[Plan, CatalogPrice]
) -> tuple[str, str]:
    """(change, effective): a higher rank, or the same rank billed over a longer
    interval (monthly to yearly), or else a higher amount, is an upgrade, made now;
    the reverse is a downgrade, at the period end."""
    if current is None:
        return "upgrade", "now"
    if current[1].id == new[1].id:
        return "same", "now"

    def weight(found: tuple[Plan, CatalogPrice]) -> tuple[int, int, int]:
        return found[0].rank, _INTERVALS.get(found[1].interval, 0), found[1].amount

    return ("upgrade", "now") if weight(new) > weight(current) else ("downgrade", "period_end")


def redirect_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """`url` starts with one of `prefixes`, at a boundary: "https://app.example.com"
    allows ".../billing" but not "https://app.example.com.evil.test"."""
    if not url.startswith(("https://", "http://")):
        return False
    for prefix in prefixes:
        if url == prefix or (
            url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#")
        ):
            return True
    return False


class Billing(UserActions):
    def __init__(
        self,
        ledger: Ledger,
        catalog: Catalog,
        gateway: StripeGateway | None,
        reads: BillingReads,
        allowed_redirects: Sequence[str] = (),
    ) -> None:
        super().__init__(ledger, catalog, gateway)
        self._reads = reads
        self._allowed_redirects = tuple(allowed_redirects)

    # --- the customer -----------------------------------------------------------------

    def update_customer(
        self, user_id: str, email: str | None, name: str | None, *, request_id: str | None = None
    ) -> CustomerDetails:
        user = self._user(user_id)
        customer_id = self._customer_id(user)
        gateway = self._require_gateway()
        try:
            key = user.idempotency_key("update_customer", customer_id, email, name)
            details = gateway.update_customer(customer_id, email, name, key)
        except StripeError as exc:
            self._record_failure(user, "update_customer", exc, request_id)
            raise
        cus = details.stripe_customer_id
        user.customer_details_updated(
            cus, self._protect(cus, details.email), self._protect(cus, details.name), request_id
        )
        self._save(user)
        return details

    # --- the subscription -------------------------------------------------------------

    def create_subscription(
        self, user_id: str, price_id: str, trial_days: int | None, *, request_id: str | None = None
    ) -> tuple[CreatedSubscription, Plan, CatalogPrice]:
        plan, price = self._price(price_id)
        user = self._user(user_id)
        self._refuse_a_second(user, price)
        trial = plan.trial_days if trial_days is None else trial_days
        gateway = self._require_gateway()
        try:
            self._ensure_customer(user, gateway, request_id)
            key = user.idempotency_key("create_subscription", price.id, trial)
            created = gateway.create_subscription(
                user.stripe_customer_id or "", price.id, user_id, key, trial_days=trial
            )
        except StripeError as exc:
            self._record_failure(user, "create_subscription", exc, request_id)
            raise
        user.subscription_created(
            price.id,
            price.interval,
            None,
            created.stripe_subscription_id,
            created.status,
            request_id,
        )
        self._save(user)
        return created, plan, price

    def change_plan(
        self, user_id: str, price_id: str, *, request_id: str | None = None
    ) -> PlanChange:
        new_plan, new_price = self._price(price_id)
        state = self._reads.billing_state(user_id)
        if state is None or is_terminal(state.status):
            raise NoSubscription(f"{user_id} has no subscription to change")
        current = self._catalog.find(state.price_id)
        if state.currency is not None and state.currency != new_price.currency:
            raise CurrencyMismatch(
                f"{price_id} is in {new_price.currency}; the subscription is in {state.currency}"
            )
        change, effective = classify(current, (new_plan, new_price))
        answer = PlanChange(
            change, effective, state.stripe_subscription_id, new_price.id, new_plan.id, None,
            None, state.status,
        )  # fmt: skip
        if change == "same":
            return answer
        user = self._user(user_id)
        gateway = self._require_gateway()
        sub_id = state.stripe_subscription_id
        key = user.idempotency_key("change_plan", sub_id, new_price.id)
        try:
            if state.pending_schedule_id is not None:  # the last word replaces it
                gateway.release_schedule(state.pending_schedule_id, key)
            if change == "upgrade":
                proration = new_plan.proration_behavior
                changed = gateway.change_price(sub_id, new_price.id, proration, key)
                effective_at, schedule_id, status = None, None, changed.status
            else:
                proration = None
                current_price = current[1].id if current else state.price_id or ""
                scheduled = gateway.schedule_price_change(sub_id, current_price, new_price.id, key)
                effective_at, schedule_id = scheduled.effective_at, scheduled.stripe_schedule_id
                status = state.status
        except StripeError as exc:
            self._record_failure(user, "change_plan", exc, request_id)
            raise
        user.plan_change_requested(
            sub_id, state.price_id, new_price.id, change, effective_at, proration, schedule_id,
            status, request_id,
        )  # fmt: skip
        self._save(user)
        return PlanChange(
            change, effective, sub_id, new_price.id, new_plan.id, effective_at, proration, status
        )

    def cancel(
        self, user_id: str, at_period_end: bool, *, request_id: str | None = None
    ) -> CanceledSubscription:
        state = self._reads.billing_state(user_id)
        user = self._user(user_id)
        sub_id, _ = self._live(user, state)
        gateway = self._require_gateway()
        try:
            canceled = gateway.cancel(
                sub_id,
                immediate=not at_period_end,
                idempotency_key=user.idempotency_key("cancel", sub_id, at_period_end),
            )
        except StripeError as exc:
            self._record_failure(user, "cancel_subscription", exc, request_id)
            raise
        user.cancellation_requested(
            canceled.stripe_subscription_id,
            not at_period_end,
            canceled.status,
            canceled.effective_at,
            request_id,
        )
        self._save(user)
        return canceled

    def resume(self, user_id: str, *, request_id: str | None = None) -> Resumed:
        state = self._reads.billing_state(user_id)
        if state is None or is_terminal(state.status):
            raise NothingToResume(f"{user_id} has no subscription to resume")
        cancelling = state.cancel_at_period_end or state.cancel_at is not None
        if not cancelling and state.pending_schedule_id is None:
            raise NothingToResume(
                f"{state.stripe_subscription_id} has no scheduled cancellation or change"
            )
        user = self._user(user_id)
        gateway = self._require_gateway()
        sub_id = state.stripe_subscription_id
        key = user.idempotency_key("resume", sub_id)
        status = state.status
        try:
            if state.pending_schedule_id is not None:
                gateway.release_schedule(state.pending_schedule_id, key)
            if cancelling:
                changed: ChangedSubscription = gateway.resume(
                    sub_id, cancel_at_period_end=state.cancel_at_period_end, idempotency_key=key
                )
                status = changed.status
        except StripeError as exc:
            self._record_failure(user, "resume_subscription", exc, request_id)
            raise
        user.resume_requested(sub_id, cancelling, state.pending_schedule_id, status, request_id)
        self._save(user)
        return Resumed(sub_id, status, cancelling, state.pending_schedule_id is not None)

    # --- hosted pages -----------------------------------------------------------------

    def checkout(
        self,
        user_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        *,
        request_id: str | None = None,
    ) -> Session:
        self._check_redirect(success_url, cancel_url)
        plan, price = self._price(price_id)
        user = self._user(user_id)
        self._refuse_a_second(user, price)
        gateway = self._require_gateway()
        try:
            self._ensure_customer(user, gateway, request_id)
            customer_id = user.stripe_customer_id or ""
            key = user.idempotency_key("checkout", price.id, success_url, cancel_url)
            session = gateway.create_checkout_session(
                customer_id, price.id, user_id, success_url, cancel_url, plan.trial_days, key
            )
        except StripeError as exc:
            self._record_failure(user, "create_checkout_session", exc, request_id)
            raise
        user.checkout_started(
            session.stripe_session_id,
            customer_id,
            price.id,
            self._protect(customer_id, success_url) or "",
            self._protect(customer_id, cancel_url) or "",
            request_id,
        )
        self._save(user)
        return session

    def portal(self, user_id: str, return_url: str, *, request_id: str | None = None) -> Session:
        self._check_redirect(return_url)
        user = self._user(user_id)
        customer_id = self._customer_id(user)
        gateway = self._require_gateway()
        try:
            key = user.idempotency_key("portal", customer_id, return_url)
            session = gateway.create_portal_session(customer_id, return_url, key)
        except StripeError as exc:
            self._record_failure(user, "create_portal_session", exc, request_id)
            raise
        user.portal_opened(customer_id, self._protect(customer_id, return_url) or "", request_id)
        self._save(user)
        return session

    # --- helpers ----------------------------------------------------------------------

    def _price(self, price_id: str) -> tuple[Plan, CatalogPrice]:
        found = self._catalog.find(price_id)
        if found is None:
            raise UnknownPrice(f"{price_id} is not a price of any plan")
        return found

    def _refuse_a_second(self, user: User, price: CatalogPrice) -> None:
        """One live subscription per user, in one currency (Stripe bills a
        customer in one currency)."""
        state = self._reads.billing_state(user.user_id)
        if state is not None and state.currency and state.currency != price.currency:
            raise CurrencyMismatch(
                f"{price.id} is in {price.currency}; this customer is billed in {state.currency}"
            )
        live = (state.stripe_subscription_id, state.status) if state else user.last_subscription
        if live is not None and blocks_new_subscription(live[1]):
            raise SubscriptionExists(
                f"{user.user_id} already has subscription {live[0]} ({live[1]})"
            )

    def _live(self, user: User, state: BillingState | None) -> tuple[str, str]:
        live = (state.stripe_subscription_id, state.status) if state else user.last_subscription
        if live is None or is_terminal(live[1]):
            raise NoSubscription(f"{user.user_id} has no subscription")
        return live

    def _data_subject(self, user: User) -> str | None:
        return user.stripe_customer_id or self._reads.customer_id(user.user_id)

    def _customer_id(self, user: User) -> str:
        customer_id = user.stripe_customer_id or self._reads.customer_id(user.user_id)
        if customer_id is None:
            raise CustomerNotFound(f"{user.user_id} has no Stripe customer yet")
        return customer_id

    def _ensure_customer(self, user: User, gateway: StripeGateway, request_id: str | None) -> None:
        """The user's customer: the one we created, or one a webhook linked, or a
        new one (with metadata.user_id)."""
        if user.stripe_customer_id is not None:
            return
        linked = self._reads.customer_id(user.user_id)
        if linked is not None:  # adopts it: recorded as the user's customer
            user.customer_created(linked, request_id)
            return
        user.customer_created(
            gateway.create_customer(user.user_id, user.idempotency_key("create_customer")),
            request_id,
        )

    def _check_redirect(self, *urls: str) -> None:
        for url in urls:
            if not redirect_allowed(url, self._allowed_redirects):
                raise InvalidRedirect(
                    "redirect URL is not under LEDGER_ALLOWED_REDIRECTS"
                    if self._allowed_redirects
                    else "no redirect is allowed: LEDGER_ALLOWED_REDIRECTS is not set"
                )
