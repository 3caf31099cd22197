"""A synthetic log for benchmarks: realistic domain events written straight through
the aggregates (no HTTP, no receipts), in large transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.application import Ledger
from ledger.domain.cause import Cause
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice, InvoiceFacts
from ledger.domain.money import Price
from ledger.domain.receipt import Outcome, Receipt
from ledger.domain.subscription import Subscription, SubscriptionState

MONTH = 2_678_400
T0 = 1_767_225_600
PRICES = [
    Price("price_lisa_premium_monthly", 999, "usd", "month"),
    Price("price_lisa_premium_annual", 9990, "usd", "year"),
    Price("price_starter_monthly", 1900, "usd", "month"),
    Price("price_professional_monthly", 4900, "usd", "month"),
]


def user_id(n: int) -> str:
    return f"user_{T0}_{n:010d}"


def _state(
    sub: str, cus: str, status: str, price: Price, start: int, ended_at: int | None, user: str
) -> SubscriptionState:
    """A month-long period from `start`, no cancellation scheduled, no trial."""
    return SubscriptionState(
        stripe_subscription_id=sub,
        stripe_customer_id=cus,
        user_id=user,
        status=status,
        price=price,
        current_period_start=start,
        current_period_end=start + MONTH,
        cancel_at_period_end=False,
        cancel_at=None,
        trial_end=None,
        ended_at=ended_at,
    )


def customer_story(n: int) -> list[Any]:
    """About 18 events: a receipt, a customer, a subscription that renews, fails a
    payment and recovers, its invoices, and for every fourth customer its end."""
    cus, sub = f"cus_syn{n}", f"sub_syn{n}"
    clock = iter(range(T0 + n * 100, T0 + n * 100 + 100))
    cause = lambda: Cause(next(clock), f"evt_syn{n}_{next(clock)}")  # noqa: E731
    customer = Customer(stripe_customer_id=cus)
    customer.change_details(f"{n}@example.com", None, cause())
    customer.link_to_user(user_id(n), cause())
    customer.add_subscription(sub)
    price = PRICES[n % len(PRICES)]
    state = _state(sub, cus, "active", price, T0, None, user_id(n))
    subscription = Subscription.start(state, cause())
    receipt = Receipt(
        stripe_event_id=f"evt_syn{n}",
        event_type="customer.subscription.created",
        stripe_created=T0 + n * 100,
        api_version=None,
        livemode=False,
        payload="{}",
    )  # a stand-in body: these events are written directly
    receipt.settle(Outcome.APPLIED)
    aggregates: list[Any] = [receipt, customer, subscription]
    for month, status in ((1, "past_due"), (1, "active"), (2, "active")):
        state = _state(sub, cus, status, price, T0 + month * MONTH, None, user_id(n))
        subscription.apply_state(state, cause())
        facts = InvoiceFacts(
            stripe_invoice_id=f"in_syn{n}_{month}_{status}",
            stripe_customer_id=cus,
            stripe_subscription_id=sub,
            number=None,
            currency=price.currency,
            amount_due=price.unit_amount,
            amount_paid=price.unit_amount,
            period_start=T0 + month * MONTH,
            period_end=T0 + (month + 1) * MONTH,
            attempt_count=1,
            next_payment_attempt=None,
            hosted_invoice_url=None,
            billing_reason="subscription_cycle",
            created=T0 + month * MONTH,
        )
        invoice = Invoice.record(facts)
        if status == "past_due":
            invoice.record_payment_failure(facts, cause())
        else:
            invoice.mark_paid(facts, cause())
        aggregates.append(invoice)
    if n % 4 == 0:
        state = _state(sub, cus, "canceled", price, T0 + 2 * MONTH, T0 + 3 * MONTH, user_id(n))
        subscription.apply_state(state, cause())
    return aggregates


def fill(
    ledger: Ledger,
    events: int | None = None,
    *,
    customers: int | None = None,
    start: int = 0,
    batch_events: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Append `events` events (about), or the stories of `customers` customers;
    returns how many events were written."""
    written, n = 0, start

    def more() -> bool:
        if customers is not None:
            return n < start + customers
        return written + pending < (events or 0)

    pending = 0
    while more():
        batch: list[Any] = []
        pending = 0
        while pending < batch_events and more():
            story = customer_story(n)
            n += 1
            batch.extend(story)
            pending += sum(len(a.pending_events) for a in story)
        ledger.save(*batch)
        written += pending
        pending = 0
        if progress:
            progress(written)
    return written
