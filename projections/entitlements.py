"""Per user: the features and limits of the current plan (the free plan's when
there is no active subscription)."""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from ledger.domain.catalog import Catalog
from ledger.domain.money import Price
from ledger.domain.status import grants_plan
from ledger.domain.subscription import Subscription
from projections.base import SqlProjection, Writer
from projections.store import Cursor
from projections.subscription_status import current_row


class EntitlementsProjection(SqlProjection):
    """Per subscription, what its plan grants. Whether it grants it now (status,
    payment grace) and which subscription is the user's current one are
    subscription_status's to say: one rule, the one get-subscription answers by."""

    name = "entitlements"
    tables = {
        "entitlements": (
            "subscription_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL, tier TEXT NOT NULL, "
            "features TEXT NOT NULL, limits TEXT NOT NULL, position BIGINT NOT NULL"
        ),
    }

    def _plan(self, price: Price | None) -> dict[str, Any]:
        plan, _, _ = self.catalog.resolve(price)
        return {
            "plan_id": plan.id,
            "tier": plan.tier,
            "features": json.dumps(list(plan.features)),
            "limits": json.dumps(plan.limits, sort_keys=True),
        }

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        w.execute(
            "INSERT INTO {entitlements} (subscription_id, plan_id, tier, features, limits, "
            "position) VALUES (:id, :plan_id, :tier, :features, :limits, :position)",
            id=str(e.originator_id),
            position=w.position,
            **self._plan(e.price),
        )

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        w.update(
            "entitlements",
            "subscription_id",
            e.originator_id,
            "plan_id = :plan_id, tier = :tier, features = :features, limits = :limits",
            **self._plan(e.price),
        )


def entitlements_of(c: Cursor, catalog: Catalog, user_id: str, now: float) -> dict[str, Any]:
    """What the user's current subscription grants while get-subscription calls it
    active (the free plan's otherwise, or while this projection has yet to see it)."""
    row = current_row(c, user_id)
    if row and grants_plan(row["status"], row["past_due_since"], row["grace_days"], now):
        rows = c.query(
            "SELECT tier, plan_id, features, limits FROM entitlements WHERE subscription_id = :id",
            {"id": row["subscription_id"]},
        )
        if rows:
            granted = rows[0]
            return {
                "tier": granted["tier"],
                "plan_id": granted["plan_id"],
                "features": json.loads(granted["features"]),
                "limits": json.loads(granted["limits"]),
            }
    free = catalog.free_plan
    return {
        "tier": free.tier,
        "plan_id": free.id,
        "features": list(free.features),
        "limits": dict(free.limits),
    }
