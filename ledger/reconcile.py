"""`ledger reconcile`: Stripe's subscriptions and customers compared with what
the ledger holds (its projections); the drift reported field by field, and with
`fix`, each drifting object followed as fetched, recorded as ReconciledFromStripe
with the fetch time as its cause, so the log's watermark rule applies. Objects
only the ledger knows are reported, never deleted. Each run is recorded as a
Reconciliation event (its counts are what /metrics shows)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError

from ledger.application import AggregateCache, Ledger
from ledger.domain.cause import Cause
from ledger.domain.reconciliation import Reconciliation
from ledger.domain.subscription import SubscriptionState
from ledger.stripe.gateway import FetchedCustomer, StripeGateway
from ledger.stripe.translator import reconcile_customer, reconcile_subscription

log = logging.getLogger("ledger.reconcile")

SUBSCRIPTION_FIELDS = (
    "status",
    "price",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "cancel_at",
    "trial_end",
)
CUSTOMER_FIELDS = ("email", "user_id")
MISSING = "missing"  # Stripe has it, the ledger never saw it
UNKNOWN_TO_STRIPE = "unknown_to_stripe"  # the ledger has it, Stripe does not list it
SAVE_ATTEMPTS = 3

Held = dict[str, dict[str, Any]]  # stripe id -> field -> value


class HeldState(Protocol):
    """What the ledger holds, as its read side answers (projections/read_side.py)."""

    def catch_up(self) -> None: ...

    def held_subscriptions(self) -> Held: ...

    def held_customers(self) -> Held: ...


@dataclass(frozen=True)
class Drift:
    object_id: str  # Stripe's id, whole
    field: str  # one of the compared fields, or MISSING / UNKNOWN_TO_STRIPE
    ledger: Any
    stripe: Any


@dataclass
class Report:
    run_id: str
    fetched_at: int
    subscriptions: int = 0  # listed at Stripe
    customers: int = 0
    drift: list[Drift] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # object ids corrected
    not_fixed: dict[str, str] = field(default_factory=dict)  # object id -> why

    def by_field(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.drift:
            counts[d.field] = counts.get(d.field, 0) + 1
        return counts

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "fetched_at": self.fetched_at,
            "listed": {"subscriptions": self.subscriptions, "customers": self.customers},
            "drift": [asdict(d) for d in self.drift],
            "by_field": self.by_field(),
            "fixed": self.fixed,
            "not_fixed": self.not_fixed,
        }


def subscription_values(state: SubscriptionState) -> dict[str, Any]:
    """A fetched subscription's compared fields, as the projections hold them."""
    return {
        "status": state.status,
        "price": state.price.stripe_price_id if state.price else None,
        "current_period_start": state.current_period_start,
        "current_period_end": state.current_period_end,
        "cancel_at_period_end": state.cancel_at_period_end,
        "cancel_at": state.cancel_at,
        "trial_end": state.trial_end,
    }


def customer_values(customer: FetchedCustomer) -> dict[str, Any]:
    return {"email": customer.email, "user_id": customer.user_id}


def compare(
    object_id: str, held: dict[str, Any] | None, fetched: dict[str, Any], status: Any
) -> list[Drift]:
    if held is None:
        return [Drift(object_id, MISSING, None, status)]
    return [Drift(object_id, f, held[f], v) for f, v in fetched.items() if held[f] != v]


Fix = Callable[[AggregateCache, list[str], Cause], bool]


@dataclass(frozen=True)
class _Listed:
    """One object Stripe listed: how it differs, and how to follow it."""

    object_id: str
    found: list[Drift]
    follow: Fix
    fetched_at: int


class Reconciler:
    def __init__(self, ledger: Ledger, gateway: StripeGateway, held: HeldState) -> None:
        self._ledger = ledger
        self._gateway = gateway
        self._held = held

    def run(
        self,
        *,
        fix: bool = False,
        on_page: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Report:
        """One run: list, compare, and with `fix` record the corrections. Stage two
        and the projections are caught up first, so what was received is counted
        as held. `on_page(kind, listed)` after each page."""
        self._ledger.process_new()
        self._held.catch_up()
        started = int(clock())
        report = Report(f"{started}_{uuid.uuid4().hex[:8]}", started)
        held = self._held.held_customers(), self._held.held_subscriptions()
        listed = [*self._customers(held[0], on_page), *self._subscriptions(held[1], on_page)]
        report.customers = sum(o.object_id.startswith("cus_") for o in listed)
        report.subscriptions = len(listed) - report.customers
        cause_id = f"reconcile_{report.run_id}"
        for o in listed:
            report.drift.extend(o.found)
            if not (fix and o.found):
                continue
            drifted = [d.field for d in o.found]
            cause = Cause(o.fetched_at, cause_id)
            if self._save(lambda uow, o=o, d=drifted, c=cause: o.follow(uow, d, c)):
                report.fixed.append(o.object_id)
            else:
                report.not_fixed[o.object_id] = "the ledger holds a newer or an ended state"
        seen = {o.object_id for o in listed}
        for object_id, values in sorted((held[0] | held[1]).items()):
            if object_id not in seen:
                report.drift.append(Drift(object_id, UNKNOWN_TO_STRIPE, values.get("status"), None))
                if fix:
                    report.not_fixed[object_id] = "not known to Stripe: reported, not deleted"
        report.drift.sort(key=lambda d: (d.object_id, d.field))
        self._record(report, fix, int(clock()))
        if fix:
            self._held.catch_up()
        return report

    def _customers(self, held: Held, on_page: Callable[[str, int], None] | None) -> list[_Listed]:
        listed = []
        for page in self._gateway.customers():
            for c in page.items:
                details = (c.email, c.name, c.user_id)
                object_id = c.stripe_customer_id
                found = compare(object_id, held.get(object_id), customer_values(c), c.email)
                follow: Fix = lambda uow, d, cause, c=c, details=details: reconcile_customer(  # noqa: E731
                    uow, c.stripe_customer_id, details, d, cause
                )
                listed.append(_Listed(object_id, found, follow, page.fetched_at))
            if on_page is not None:
                on_page("customers", len(page.items))
        return listed

    def _subscriptions(
        self, held: Held, on_page: Callable[[str, int], None] | None
    ) -> list[_Listed]:
        listed = []
        for page in self._gateway.subscriptions():
            for s in page.items:
                object_id = s.stripe_subscription_id
                found = compare(object_id, held.get(object_id), subscription_values(s), s.status)
                follow: Fix = lambda uow, d, cause, s=s: reconcile_subscription(uow, s, d, cause)  # noqa: E731
                listed.append(_Listed(object_id, found, follow, page.fetched_at))
            if on_page is not None:
                on_page("subscriptions", len(page.items))
        return listed

    def _save(self, change: Callable[[AggregateCache], bool]) -> bool:
        """One object's correction in one transaction; loaded again and retried
        when stage two wrote to the same aggregates meanwhile."""
        for attempt in range(SAVE_ATTEMPTS):
            uow = AggregateCache(self._ledger.repository)
            changed = change(uow)
            try:
                self._ledger.save(*uow.changed())
            except IntegrityError:
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
                continue
            return changed
        return False

    def _record(self, report: Report, fixing: bool, finished_at: int) -> None:
        self._ledger.save(
            Reconciliation(
                run_id=report.run_id,
                fetched_at=report.fetched_at,
                finished_at=finished_at,
                subscriptions=report.subscriptions,
                customers=report.customers,
                drift=report.by_field(),
                fixed=len(report.fixed),
                fixing=fixing,
            )
        )
        self._ledger.forget()  # what stage two keeps may be older than what was saved
