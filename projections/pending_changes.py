"""Per subscription: a downgrade the user asked for, waiting for the period's end
(recorded as `User.PlanChangeRequested`); gone once Stripe switches the price,
the subscription ends, or the user withdraws it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.ids import id_text
from ledger.domain.subscription import Subscription
from ledger.domain.user import User
from projections.base import Held, SqlProjection, Writer
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

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory: its subscriptions' rows read in one query,
        changed by the handlers, written back (and deleted) in a statement each."""
        rows = w.memo[_HELD] = Held(type(self), "pending_changes", "subscription_id")
        rows.load(w, {_subscription(e) for _, e in events})
        super().apply_all(events, w)
        rows.write(w)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: User.PlanChangeRequested, w: Writer) -> None:
        rows: Held = w.memo[_HELD]
        if e.change != "downgrade":  # an upgrade replaces whatever was pending
            rows.drop(_subscription(e))
            return
        found = self.catalog.find(e.to_price_id)
        rows.add(
            {
                "subscription_id": _subscription(e),
                "stripe_subscription_id": e.stripe_subscription_id,
                "price_id": e.to_price_id,
                "plan_id": found[0].id if found else None,
                "effective_at": e.effective_at,
                "stripe_schedule_id": e.stripe_schedule_id,
                "position": w.position,
            }
        )

    @apply.register
    def _(self, e: User.ResumeRequested, w: Writer) -> None:
        if e.released_schedule_id is not None:
            w.memo[_HELD].drop(_subscription(e))

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        rows: Held = w.memo[_HELD]
        row = rows.rows.get(id_text(e.originator_id))
        if e.price is not None and row is not None and row["price_id"] == e.price.stripe_price_id:
            rows.drop(id_text(e.originator_id))  # the change took effect

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        w.memo[_HELD].drop(id_text(e.originator_id))


_HELD = "pending_changes:held"  # in `Writer.memo`


def _subscription(e: Any) -> str:
    """The id of the subscription the event is about (a user's request names it by
    its Stripe id)."""
    if isinstance(e, User.Event):
        return id_text(Subscription.create_id(e.stripe_subscription_id))
    return id_text(e.originator_id)


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
