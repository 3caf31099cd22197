"""Every call this service makes TO Stripe goes through `StripeGateway`.

It wraps the official `stripe` library (a `StripeClient`, never the library's
global settings) and returns our own frozen dataclasses, never Stripe objects:
each answer is read through the payload models of `ledger.stripe.payloads`.

Two modes, chosen explicitly by `payment_behavior` (nothing is guessed from the URL):

- ``"default_incomplete"`` (real Stripe, the default): a subscription is created on
  ``items[0][price]`` with ``payment_settings[save_default_payment_method]=on_subscription``;
  its first payment stays incomplete and the extension confirms it with the client
  secret at ``latest_invoice.confirmation_secret.client_secret`` (current API shape:
  the invoice no longer carries its PaymentIntent).
- anything else, e.g. ``"allow_incomplete"`` ("localstripe mode"): localstripe speaks
  the 2017 API. It has no Prices API (the item is ``{"plan": id}``; real Stripe also
  accepts a plan id as a price), rejects ``default_incomplete``, ``payment_settings``
  and a subscription's ``default_payment_method``, and only knows
  ``latest_invoice.payment_intent``, and answers with billing periods at the top
  level, not on the item. The client secret and the period are read from whichever
  shape the answer has.

Idempotency: each mutating Stripe call sends ``Idempotency-Key: <caller's key>:<step>``,
so one caller key covers several Stripe calls distinctly, and calling again with the
same key replays instead of creating a second customer or subscription.

Retries: the library retries, with exponential back-off and the same idempotency key,
connection errors it flags as retryable (timeouts, refused connections), every 5xx,
409, and any answer carrying ``Stripe-Should-Retry: true``; up to
``max_network_retries`` times (see ``stripe/_http_client.py: HTTPClient._should_retry``).
A 429 is NOT retried unless Stripe sends that header. Whatever still fails becomes
`StripeUnavailable` (try later) or `StripeRejected` (Stripe said no). Error messages
are safe to store and show: they never contain the API key. Nothing here logs the
key or request bodies; a filter on the library's "stripe" logger drops its DEBUG
records (whole bodies) and masks secret keys in the rest.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from ledger.domain.receipt import Delivery
from ledger.domain.subscription import SubscriptionState
from ledger.stripe.payloads import (
    StripeCustomer,
    StripeInvoiceItem,
    StripeMeterEvent,
    StripePaymentMethod,
    StripeSession,
    StripeSubscription,
    StripeSubscriptionSchedule,
    read_customer,
    read_list,
    read_listed_event,
    read_subscription,
)

if TYPE_CHECKING:  # imported when a gateway is made: a start that makes none skips its 0.15 s
    import stripe

log = logging.getLogger(__name__)

REAL_STRIPE_BEHAVIOR = "default_incomplete"
PAYMENT_BEHAVIORS = frozenset({"default_incomplete", "allow_incomplete", "error_if_incomplete"})
# Seconds: to connect, then to wait for an answer (the library's default is 80 for both).
DEFAULT_TIMEOUT = (5.0, 30.0)
_MAX_IDEMPOTENCY_KEY = 255  # Stripe's limit
PAGE_SIZE = 100  # Stripe's largest page
# Stripe allows about 100 read requests/s in live mode and 25 in test mode.
DEFAULT_READS_PER_SECOND = 20.0
RATE_LIMIT_RETRIES = 6  # our own back-off on 429, after the library's retries
_SECRET_KEY_PATTERN = re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9*]+")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class StripeError(Exception):
    """A Stripe call failed. `code` is machine-readable; `message` is safe to show a
    user and to store (it never contains the API key)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"http_status={self.http_status!r}, request_id={self.request_id!r})"
        )


class StripeUnavailable(StripeError):
    """Network errors, 5xx, 409 or 429 that still failed after the retries: try later."""


class StripeRejected(StripeError):
    """Stripe answered 4xx: card declined, invalid request, unknown object, bad key."""


@dataclass(frozen=True)
class CreatedSubscription:
    stripe_subscription_id: str
    stripe_customer_id: str
    status: str  # Stripe's status: incomplete, active, trialing ...
    client_secret: str | None  # for the extension to confirm the first payment
    current_period_start: int | None
    current_period_end: int | None
    trial_end: int | None = None


@dataclass(frozen=True)
class CustomerDetails:
    stripe_customer_id: str
    email: str | None
    name: str | None


@dataclass(frozen=True)
class ChangedSubscription:
    """What Stripe answered to a plan change or a resumption."""

    stripe_subscription_id: str
    status: str
    price_id: str | None
    cancel_at_period_end: bool
    cancel_at: int | None


@dataclass(frozen=True)
class ScheduledChange:
    stripe_schedule_id: str
    effective_at: int  # when the new price starts: the current period's end


@dataclass(frozen=True)
class Session:
    stripe_session_id: str
    url: str


@dataclass(frozen=True)
class CanceledSubscription:
    stripe_subscription_id: str
    status: str
    cancel_at_period_end: bool
    effective_at: int | None  # unix seconds when it ends / ended


@dataclass(frozen=True)
class FetchedCustomer:
    stripe_customer_id: str
    email: str | None
    name: str | None
    user_id: str | None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list call, read into our words, and when it was asked for."""

    items: list[T]
    fetched_at: int  # unix seconds


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        max_network_retries: int = 2,
        payment_behavior: str = REAL_STRIPE_BEHAVIOR,
        test_payment_method: str | None = None,
        http_client: stripe.HTTPClient | None = None,
        reads_per_second: float = DEFAULT_READS_PER_SECOND,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required")
        if payment_behavior not in PAYMENT_BEHAVIORS:
            raise ValueError(f"payment_behavior must be one of {sorted(PAYMENT_BEHAVIORS)}")
        if max_network_retries < 0:
            raise ValueError("max_network_retries must be >= 0")
        _guard_library_log()
        self._api_key = api_key  # kept only to scrub it out of error messages
        self._payment_behavior = payment_behavior
        self._test_payment_method = test_payment_method
        if reads_per_second <= 0:
            raise ValueError("reads_per_second must be positive")
        self._read_interval = 1.0 / reads_per_second
        self._last_read = 0.0  # time.monotonic() of the last list request
        self._sleep = sleep
        import stripe

        self._http_client = http_client or stripe.RequestsClient(timeout=DEFAULT_TIMEOUT)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http_client,
        )

    def __repr__(self) -> str:
        return f"StripeGateway(payment_behavior={self._payment_behavior!r})"

    @property
    def localstripe_mode(self) -> bool:
        """True unless payment_behavior is "default_incomplete" (see the module doc)."""
        return self._payment_behavior != REAL_STRIPE_BEHAVIOR

    def close(self) -> None:
        self._http_client.close()

    # --- the calls ------------------------------------------------------------------

    def create_customer(self, user_id: str, idempotency_key: str) -> str:
        """Create a customer tagged with our user id; return its ``cus_`` id. With a
        `test_payment_method`, also attach it and make it the customer's default."""
        customer = self._ask(
            "create_customer",
            StripeCustomer,
            lambda: self._client.v1.customers.create(
                params={"metadata": {"user_id": user_id}},
                options=_options(idempotency_key, "create"),
            ),
        )
        customer_id = customer.id
        if self._test_payment_method is not None:
            self._attach_as_default(customer_id, self._test_payment_method, idempotency_key)
        return customer_id

    def create_subscription(
        self,
        customer_id: str,
        price_id: str,
        user_id: str,
        idempotency_key: str,
        *,
        trial_days: int | None = None,
    ) -> CreatedSubscription:
        params: dict[str, Any] = {
            "customer": customer_id,
            "metadata": {"user_id": user_id},
            "payment_behavior": self._payment_behavior,
        }
        if trial_days:
            params["trial_period_days"] = trial_days
        if self.localstripe_mode:
            params["items"] = [{"plan": price_id}]
            params["expand"] = ["latest_invoice.payment_intent"]
        else:
            params["items"] = [{"price": price_id}]
            params["payment_settings"] = {"save_default_payment_method": "on_subscription"}
            params["expand"] = ["latest_invoice.confirmation_secret"]
        sub = self._ask(
            "create_subscription",
            StripeSubscription,
            lambda: self._client.v1.subscriptions.create(
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "create"),
            ),
        )
        start, end = sub.period
        return CreatedSubscription(
            stripe_subscription_id=sub.id,
            stripe_customer_id=sub.customer,
            status=sub.status,
            client_secret=sub.client_secret,
            current_period_start=start,
            current_period_end=end,
            trial_end=sub.trial_end,
        )

    def cancel(
        self, subscription_id: str, *, immediate: bool, idempotency_key: str
    ) -> CanceledSubscription:
        """immediate: end it now (DELETE); otherwise at the end of the paid period."""
        if immediate:
            sub = self._ask(
                "cancel_subscription",
                StripeSubscription,
                lambda: self._client.v1.subscriptions.cancel(
                    subscription_id, options=_options(idempotency_key, "cancel_now")
                ),
            )
            effective_at = sub.ended_at or sub.canceled_at
        else:
            sub = self._ask(
                "cancel_subscription",
                StripeSubscription,
                lambda: self._client.v1.subscriptions.update(
                    subscription_id,
                    params={"cancel_at_period_end": True},
                    options=_options(idempotency_key, "cancel_at_period_end"),
                ),
            )
            effective_at = sub.cancel_at or sub.period[1]
        return CanceledSubscription(
            stripe_subscription_id=sub.id,
            status=sub.status,
            cancel_at_period_end=sub.cancel_at_period_end,
            effective_at=effective_at,
        )

    def set_default_payment_method(
        self, customer_id: str, subscription_id: str, payment_method_id: str, idempotency_key: str
    ) -> str:
        """Attach the payment method to the customer and make it the default for the
        customer's invoices and for the subscription; return the attached id (Stripe
        may answer with a new id, e.g. for test tokens like ``pm_card_visa``)."""
        attached = self._attach_as_default(customer_id, payment_method_id, idempotency_key)
        if not self.localstripe_mode:  # localstripe has no subscription default_payment_method
            self._call(
                "set_default_payment_method",
                lambda: self._client.v1.subscriptions.update(
                    subscription_id,
                    params={"default_payment_method": attached},
                    options=_options(idempotency_key, "subscription_default_pm"),
                ),
            )
        return attached

    # --- lists (backfill and reconcile) ------------------------------------------

    def events(self, since: int, types: Collection[str]) -> Iterator[Page[Delivery]]:
        """Stripe's events created at or after `since` (unix seconds) of the given
        types, page by page, each read like a delivery (marked as backfilled).
        localstripe knows only one `type`, not `types[]`: in its mode the types are
        filtered here instead."""
        params: dict[str, Any] = {"created": {"gte": since}}
        if not self.localstripe_mode:
            params["types"] = sorted(types)
        for page in self._pages("list_events", "/v1/events", params):
            listed = [read_listed_event(obj) for obj in page.items]
            yield Page([d for d in listed if d.event_type in types], page.fetched_at)

    def subscriptions(self) -> Iterator[Page[SubscriptionState]]:
        """Every subscription Stripe has, canceled ones too (`status=all`)."""
        for page in self._pages("list_subscriptions", "/v1/subscriptions", {"status": "all"}):
            yield Page([read_subscription(obj) for obj in page.items], page.fetched_at)

    def customers(self) -> Iterator[Page[FetchedCustomer]]:
        for page in self._pages("list_customers", "/v1/customers", {}):
            customers = [FetchedCustomer(*read_customer(obj)) for obj in page.items]
            yield Page(customers, page.fetched_at)

    def _pages(
        self, action: str, path: str, params: dict[str, Any]
    ) -> Iterator[Page[dict[str, Any]]]:
        """`limit=100` pages, each after the last id of the one before, paced
        below the read rate limit. Through the library's `raw_request` (its
        requests, retries and errors) without its objects: building those costs
        about 1 s of CPU per 100 subscriptions; the page's JSON is read through
        our models instead."""
        after: str | None = None
        while True:
            asked = {**params, "limit": PAGE_SIZE, **({"starting_after": after} if after else {})}
            fetched_at = int(time.time())
            answer = self._read(action, lambda a=asked: self._client.raw_request("get", path, **a))
            page = read_list(answer.body)  # the page's JSON, as Stripe sent it
            yield Page(page.data, fetched_at)
            after = page.last_id
            if not page.has_more or after is None:
                return

    def _read(self, action: str, call: Callable[[], T]) -> T:
        """A read, paced to `reads_per_second`; a 429 that outlasts the library's
        own retries is retried here with exponential back-off and jitter."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            wait = self._last_read + self._read_interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_read = time.monotonic()
            try:
                return self._call(action, call)
            except StripeUnavailable as exc:
                if exc.http_status != 429 or attempt == RATE_LIMIT_RETRIES:
                    raise
                delay = min(30.0, 2.0**attempt) * (0.5 + random.random() / 2)
                log.info("stripe %s: rate limited, waiting %.1f s", action, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # --- the billing API's calls ----------------------------------------------------

    def update_customer(
        self, customer_id: str, email: str | None, name: str | None, idempotency_key: str
    ) -> CustomerDetails:
        """Change what is given (None: left as it is); answer what Stripe holds now."""
        params = {k: v for k, v in (("email", email), ("name", name)) if v is not None}
        customer = self._ask(
            "update_customer",
            StripeCustomer,
            lambda: self._client.v1.customers.update(
                customer_id,
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "update_customer"),
            ),
        )
        return CustomerDetails(customer.id, customer.email, customer.name)

    def change_price(
        self,
        subscription_id: str,
        price_id: str,
        proration_behavior: str,
        idempotency_key: str,
    ) -> ChangedSubscription:
        """Move the subscription's one item to `price_id` now, prorated as told. The
        item's id is read first. localstripe mode: `plan` for `price`, and no
        proration settings (it prorates its own way)."""
        current = self._ask(
            "change_price",
            StripeSubscription,
            lambda: self._client.v1.subscriptions.retrieve(subscription_id),
        )
        item = current.first_item
        params: dict[str, Any] = {}
        if self.localstripe_mode:
            params["items"] = [{"id": item.id if item else None, "plan": price_id}]
        else:
            params["items"] = [{"id": item.id if item else None, "price": price_id}]
            params["proration_behavior"] = proration_behavior
            # Keep the old price while the prorated invoice is unpaid.
            params["payment_behavior"] = "pending_if_incomplete"
        if params["items"][0]["id"] is None:
            del params["items"][0]["id"]
        sub = self._ask(
            "change_price",
            StripeSubscription,
            lambda: self._client.v1.subscriptions.update(
                subscription_id,
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "change_price"),
            ),
        )
        return _changed(sub)

    def schedule_price_change(
        self, subscription_id: str, current_price_id: str, price_id: str, idempotency_key: str
    ) -> ScheduledChange:
        """From the end of the current period on, bill `price_id`: a subscription
        schedule made from the subscription, its current phase kept until the
        period ends, then one phase on the new price, then released."""
        schedule = self._ask(
            "schedule_price_change",
            StripeSubscriptionSchedule,
            lambda: self._client.v1.subscription_schedules.create(
                params={"from_subscription": subscription_id},
                options=_options(idempotency_key, "schedule_create"),
            ),
        )
        if not schedule.phases or schedule.phases[0].end_date is None:
            raise StripeRejected(
                "schedule_without_period", "Stripe's schedule has no current period to end."
            )
        current = schedule.phases[0]
        params: dict[str, Any] = {
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": current_price_id, "quantity": 1}],
                    "start_date": current.start_date,
                    "end_date": current.end_date,
                },
                {"items": [{"price": price_id, "quantity": 1}], "proration_behavior": "none"},
            ],
        }
        updated = self._ask(
            "schedule_price_change",
            StripeSubscriptionSchedule,
            lambda: self._client.v1.subscription_schedules.update(
                schedule.id,
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "schedule_phases"),
            ),
        )
        return ScheduledChange(updated.id, current.end_date)

    def release_schedule(self, schedule_id: str, idempotency_key: str) -> None:
        """Drop a schedule's future phases; the subscription goes on as it is."""
        self._call(
            "release_schedule",
            lambda: self._client.v1.subscription_schedules.release(
                schedule_id, options=_options(idempotency_key, "schedule_release")
            ),
        )

    def resume(
        self, subscription_id: str, *, cancel_at_period_end: bool, idempotency_key: str
    ) -> ChangedSubscription:
        """Withdraw a scheduled cancellation: at period end, or with a date."""
        params: dict[str, Any] = (
            {"cancel_at_period_end": False} if cancel_at_period_end else {"cancel_at": ""}
        )
        sub = self._ask(
            "resume_subscription",
            StripeSubscription,
            lambda: self._client.v1.subscriptions.update(
                subscription_id,
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "resume"),
            ),
        )
        return _changed(sub)

    def create_checkout_session(
        self,
        customer_id: str,
        price_id: str,
        user_id: str,
        success_url: str,
        cancel_url: str,
        trial_days: int,
        idempotency_key: str,
    ) -> Session:
        """A hosted Checkout page subscribing the customer to `price_id`."""
        subscription_data: dict[str, Any] = {"metadata": {"user_id": user_id}}
        if trial_days:
            subscription_data["trial_period_days"] = trial_days
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": user_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"user_id": user_id},
            "subscription_data": subscription_data,
        }
        session = self._ask(
            "create_checkout_session",
            StripeSession,
            lambda: self._client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options=_options(idempotency_key, "checkout"),
            ),
        )
        return Session(session.id, session.url)

    def create_portal_session(
        self, customer_id: str, return_url: str, idempotency_key: str
    ) -> Session:
        """A Customer Portal session: the customer manages their billing at Stripe."""
        session = self._ask(
            "create_portal_session",
            StripeSession,
            lambda: self._client.v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url},
                options=_options(idempotency_key, "portal"),
            ),
        )
        return Session(session.id, session.url)

    def report_meter_event(
        self, event_name: str, customer_id: str, value: int, timestamp: int, idempotency_key: str
    ) -> str:
        """Send usage to a Stripe billing meter; the key is also the event's
        `identifier`, which Stripe deduplicates on. Returns the identifier."""
        event = self._ask(
            "report_meter_event",
            StripeMeterEvent,
            lambda: self._client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "identifier": idempotency_key,
                    "timestamp": timestamp,
                    "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                },
                options=_options(idempotency_key, "meter_event"),
            ),
        )
        return event.identifier

    def create_invoice_item(
        self,
        customer_id: str,
        amount: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> str:
        """Add an amount (minor units) to the customer's next invoice; returns its id."""
        item = self._ask(
            "create_invoice_item",
            StripeInvoiceItem,
            lambda: self._client.v1.invoice_items.create(
                params={
                    "customer": customer_id,
                    "amount": amount,
                    "currency": currency,
                    "description": description,
                    "metadata": metadata,
                },
                options=_options(idempotency_key, "invoice_item"),
            ),
        )
        return item.id

    # --- helpers --------------------------------------------------------------------

    def _attach_as_default(self, customer_id: str, payment_method_id: str, key: str) -> str:
        attached = self._ask(
            "attach_payment_method",
            StripePaymentMethod,
            lambda: self._client.v1.payment_methods.attach(
                payment_method_id,
                params={"customer": customer_id},
                options=_options(key, "attach_pm"),
            ),
        ).id
        self._call(
            "set_default_payment_method",
            lambda: self._client.v1.customers.update(
                customer_id,
                params={"invoice_settings": {"default_payment_method": attached}},
                options=_options(key, "customer_default_pm"),
            ),
        )
        return attached

    def _ask(self, action: str, answer: type[M], call: Callable[[], stripe.StripeObject]) -> M:
        """Make a call and read its answer through our model of the object it is."""
        return answer.model_validate(self._call(action, call).to_dict())

    def _call(self, action: str, call: Callable[[], T]) -> T:
        import stripe

        try:
            return call()
        except stripe.StripeError as exc:
            error = self._translate(exc)
            log.warning(
                "stripe %s failed: %s %s (http %s, request %s)",
                action,
                type(error).__name__,
                error.code,
                error.http_status,
                error.request_id,
            )
            # Not chained: the library's exception may quote (a masked form of) the key.
            raise error from None

    def _translate(self, exc: stripe.StripeError) -> StripeError:
        import stripe

        status = exc.http_status
        request_id = exc.request_id
        if isinstance(exc, stripe.APIConnectionError | stripe.APIError | stripe.RateLimitError) or (
            status is not None and (status >= 500 or status in (409, 429))
        ):
            return StripeUnavailable(
                "stripe_unavailable",
                "Stripe cannot be reached right now; please try again in a few minutes.",
                http_status=status,
                request_id=request_id,
            )
        code = exc.code or (exc.error.code if exc.error is not None else None)
        if code is None and isinstance(exc, stripe.IdempotencyError):
            code = "idempotency_error"
        code = code or "stripe_rejected"
        if isinstance(exc, stripe.CardError):
            message = self._scrub(exc.user_message or "") or "The card was declined."
        elif isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
            message = "Stripe refused this service's credentials."
        else:
            message = self._scrub(exc.user_message or "") or "Stripe rejected the request."
        return StripeRejected(code, message[:500], http_status=status, request_id=request_id)

    def _scrub(self, text: str) -> str:
        return _SECRET_KEY_PATTERN.sub("[redacted]", text.replace(self._api_key, "[redacted]"))


class _LibraryLogGuard(logging.Filter):
    """On the library's "stripe" logger: drop its DEBUG records (they hold whole
    request and response bodies) and mask secret keys in the rest (it logs Stripe's
    error messages at INFO, and those may quote the key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False
        message = record.getMessage()
        if _SECRET_KEY_PATTERN.search(message):
            record.msg, record.args = _SECRET_KEY_PATTERN.sub("[redacted]", message), None
        return True


def _guard_library_log() -> None:
    library_log = logging.getLogger("stripe")
    if not any(isinstance(f, _LibraryLogGuard) for f in library_log.filters):
        library_log.addFilter(_LibraryLogGuard())


def _changed(sub: StripeSubscription) -> ChangedSubscription:
    item = sub.first_item
    price = item.to_price() if item else None
    return ChangedSubscription(
        stripe_subscription_id=sub.id,
        status=sub.status,
        price_id=price.stripe_price_id if price else None,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
    )


def _options(idempotency_key: str, step: str) -> stripe.RequestOptions:
    if not idempotency_key:
        raise ValueError("an idempotency key is required")
    key = f"{idempotency_key}:{step}"
    if len(key) > _MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency key longer than {_MAX_IDEMPOTENCY_KEY} characters")
    return {"idempotency_key": key}
