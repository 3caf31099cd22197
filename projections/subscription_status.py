"""Per subscription (and so per user): the fields of the extension's
get-subscription answer, plus tier, trial end and the last position applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.ids import id_text
from ledger.domain.invoice import Invoice
from ledger.domain.money import Price
from ledger.domain.status import Status, grants_plan, is_live
from ledger.domain.subscription import Subscription
from projections.activity import (
    CURRENT_ORDER,
    earlier,
    failed_subscription,
    record_invoice,
    subscriptions_of,
)
from projections.base import Held, SqlProjection, Writer
from projections.store import Cursor

FIELDS = (
    "status",
    "plan_name",
    "amount",
    "interval",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
)


class SubscriptionStatusProjection(SqlProjection):
    name = "subscription_status"
    tables = {
        "subscription_status": (
            "subscription_id TEXT PRIMARY KEY, stripe_subscription_id TEXT NOT NULL, "
            "stripe_customer_id TEXT NOT NULL, user_id TEXT, status TEXT NOT NULL, "
            "price_id TEXT, plan_id TEXT, plan_name TEXT, tier TEXT, amount BIGINT, "
            "currency TEXT, interval TEXT, current_period_start BIGINT, "
            "current_period_end BIGINT, cancel_at_period_end INTEGER NOT NULL, "
            "cancel_at BIGINT, trial_end BIGINT, ended_at BIGINT, started_at BIGINT NOT NULL, "
            "past_due_since BIGINT, grace_days INTEGER NOT NULL, position BIGINT NOT NULL"
        ),
        "subscription_invoices": "invoice_id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL",
    }
    indexes = {"subscription_status_user": "{subscription_status} (user_id)"}
    reader_indexes = frozenset({"subscription_status_user"})

    def _plan(self, price: Price | None) -> dict[str, Any]:
        plan, name, _ = self.catalog.resolve(price)
        return {
            "price_id": price.stripe_price_id if price else None,
            "plan_id": plan.id, "plan_name": name, "tier": plan.tier,
            "grace_days": plan.grace_days,
            "amount": price.unit_amount if price else None,
            "currency": price.currency if price else None,
            "interval": price.interval if price else None,
        }  # fmt: skip

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory: its subscriptions' rows read in one query (and
        the subscriptions of failed payments of invoices recorded before the batch
        in another: `subscriptions_of`), changed by the handlers, written back in
        one statement."""
        rows = w.memo[_HELD] = Held(type(self), "subscription_status", "subscription_id")
        subs, w.memo[_FOUND] = subscriptions_of(w, "subscription_invoices", events)
        rows.load(w, subs)
        super().apply_all(events, w)
        rows.write(w)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        w.memo[_HELD].add(
            {
                "subscription_id": id_text(e.originator_id),
                "stripe_subscription_id": e.stripe_subscription_id,
                "stripe_customer_id": e.stripe_customer_id,
                "user_id": e.user_id,
                "status": str(e.status),
                **self._plan(e.price),
                "current_period_start": e.current_period_start,
                "current_period_end": e.current_period_end,
                "cancel_at_period_end": int(e.cancel_at_period_end),
                "cancel_at": e.cancel_at,
                "trial_end": e.trial_end,
                "ended_at": None,
                "started_at": e.stripe_created,
                "past_due_since": e.stripe_created if e.status == Status.PAST_DUE else None,
                "position": w.position,
            }
        )

    @staticmethod
    def _set(w: Writer, e: Any, **values: Any) -> dict[str, Any] | None:
        """The subscription's row (None: none) with `values` and the event's position."""
        return w.memo[_HELD].change(id_text(e.originator_id), position=w.position, **values)  # type: ignore[no-any-return]

    @apply.register
    def _(self, e: Subscription.StatusChanged, w: Writer) -> None:
        row = self._set(w, e, status=str(e.status))
        if row is None:
            return
        if e.status == Status.PAST_DUE:
            row["past_due_since"] = earlier(row["past_due_since"], e.stripe_created)
        elif is_live(e.status):
            row["past_due_since"] = None

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        self._set(w, e, **self._plan(e.price))

    @apply.register
    def _(self, e: Subscription.PeriodChanged, w: Writer) -> None:
        self._set(
            w, e, current_period_start=e.current_period_start,
            current_period_end=e.current_period_end,
        )  # fmt: skip

    @apply.register
    def _(self, e: Subscription.TrialChanged, w: Writer) -> None:
        self._set(w, e, trial_end=e.trial_end)

    @apply.register
    def _(self, e: Subscription.CancellationScheduled, w: Writer) -> None:
        self._set(w, e, cancel_at_period_end=int(e.at_period_end), cancel_at=e.cancel_at)

    @apply.register
    def _(self, e: Subscription.CancellationWithdrawn, w: Writer) -> None:
        self._set(w, e, cancel_at_period_end=0, cancel_at=None)

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        self._set(w, e, status=str(e.status), ended_at=e.ended_at)

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        self._set(w, e, user_id=e.user_id)

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        record_invoice(w, "subscription_invoices", e)

    @apply.register
    def _(self, e: Invoice.PaymentFailed, w: Writer) -> None:
        found = w.memo[_FOUND]
        sid = failed_subscription(w, "subscription_invoices", id_text(e.originator_id), found)
        row = None if sid is None else w.memo[_HELD].change(sid, position=w.position)
        if row is not None:
            row["past_due_since"] = earlier(row["past_due_since"], e.stripe_created)


_HELD, _FOUND = "subscription_status:held", "subscription_status:found"  # in `Writer.memo`


CURRENT = f"SELECT * FROM subscription_status WHERE user_id = :user_id {CURRENT_ORDER} LIMIT 1"


def current_subscription(
    c: Cursor, user_id: str, now: float, free_tier: str = "free"
) -> dict[str, Any]:
    """The get-subscription answer for a user, as of `now` (unix seconds), with
    the tier it grants."""
    return status_answer(current_row(c, user_id), now, free_tier)


def current_row(c: Cursor, user_id: str) -> dict[str, Any] | None:
    """The row of the user's current subscription (see CURRENT_ORDER)."""
    rows = c.query(CURRENT, {"user_id": user_id})
    return rows[0] if rows else None


def status_answer(row: Mapping[str, Any] | None, now: float, free_tier: str) -> dict[str, Any]:
    if row is None:
        return {"active": False, "tier": free_tier}
    active = grants_plan(row["status"], row["past_due_since"], row["grace_days"], now)
    return {
        "active": active,
        "id": row["stripe_subscription_id"],
        **{field: row[field] for field in FIELDS},
        "cancel_at_period_end": bool(row["cancel_at_period_end"]),
        "currency": row["currency"],
        "tier": row["tier"] if active else free_tier,
        "trial_end": row["trial_end"],
        "position": row["position"],
    }
