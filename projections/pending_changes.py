"""Per subscription: a downgrade the user asked for, waiting for the period's end
(recorded as `User.PlanChangeRequested`); gone once Stripe switches the price,
the subscription ends, or the user withdraws it."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.subscription import Subscription
from ledger.domain.user import User
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class PendingChangesProjection(SqlProjection):
    name = "pending_changes"
    rebuild_cost = 3.0
    tables = {
        "pending_changes": (
            "subscription_id TEXT PRIMARY KEY, stripe_subscription_id TEXT NOT NULL, "
            "price_id TEXT NOT NULL, plan_id TEXT, effective_at BIGINT, "
            "stripe_schedule_id TEXT, position BIGINT NOT NULL"
        ),
    }

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    def _drop(self, w: Writer, subscription_id: object, condition: str = "", **p: Any) -> None:
        w.execute(
            "DELETE FROM {pending_changes} WHERE subscription_id = :id" + condition,
            id=str(subscription_id),
            **p,
        )

    @apply.register
    def _(self, e: User.PlanChangeRequested, w: Writer) -> None:
        subscription_id = Subscription.create_id(e.stripe_subscription_id)
        if e.change != "downgrade":  # an upgrade replaces whatever was pending
            self._drop(w, subscription_id)
            return
        found = self.catalog.find(e.to_price_id)
        w.execute(
            "INSERT INTO {pending_changes} (subscription_id, stripe_subscription_id, price_id, "
            "plan_id, effective_at, stripe_schedule_id, position) VALUES (:id, :sub, :price, "
            ":plan, :at, :schedule, :position) ON CONFLICT (subscription_id) DO UPDATE SET "
            "price_id = excluded.price_id, plan_id = excluded.plan_id, "
            "effective_at = excluded.effective_at, stripe_schedule_id = "
            "excluded.stripe_schedule_id, position = excluded.position",
            id=str(subscription_id),
            sub=e.stripe_subscription_id,
            price=e.to_price_id,
            plan=found[0].id if found else None,
            at=e.effective_at,
            schedule=e.stripe_schedule_id,
            position=w.position,
        )

    @apply.register
    def _(self, e: User.ResumeRequested, w: Writer) -> None:
        if e.released_schedule_id is not None:
            self._drop(w, Subscription.create_id(e.stripe_subscription_id))

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        if e.price is not None:  # the change took effect
            self._drop(w, e.originator_id, " AND price_id = :price", price=e.price.stripe_price_id)

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        self._drop(w, e.originator_id)


def pending_change_of(c: Cursor, subscription_id: str, now: float) -> dict[str, Any] | None:
    """The downgrade waiting on this subscription (by our id), until it is due."""
    rows = c.query(
        "SELECT price_id, plan_id, effective_at, stripe_schedule_id FROM pending_changes "
        "WHERE subscription_id = :id",
        {"id": subscription_id},
    )
    if not rows or (rows[0]["effective_at"] is not None and rows[0]["effective_at"] <= now):
        return None
    return dict(rows[0])
