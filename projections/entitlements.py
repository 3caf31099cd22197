"""Per user: the features and limits of the current plan (the free plan's when
there is no active subscription)."""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from ledger.money import Price
from ledger.plans import Catalog
from ledger.subscription import Subscription
from projections.activity import CURRENT_ORDER, is_active, past_due_since_sql
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class EntitlementsProjection(SqlProjection):
    name = "entitlements"
    tables = {
        "entitlements": (
            "subscription_id TEXT PRIMARY KEY, user_id TEXT, status TEXT NOT NULL, "
            "plan_id TEXT NOT NULL, tier TEXT NOT NULL, features TEXT NOT NULL, "
            "limits TEXT NOT NULL, grace_days INTEGER NOT NULL, past_due_since BIGINT, "
            "started_at BIGINT NOT NULL, position BIGINT NOT NULL"
        ),
    }
    indexes = {"entitlements_user": "{entitlements} (user_id)"}

    def _plan(self, price: Price | None) -> dict[str, Any]:
        plan, _, _ = self.catalog.resolve(price)
        return {
            "plan_id": plan.id,
            "tier": plan.tier,
            "grace_days": plan.grace_days,
            "features": json.dumps(list(plan.features)),
            "limits": json.dumps(plan.limits, sort_keys=True),
        }

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        w.execute(
            "INSERT INTO {entitlements} (subscription_id, user_id, status, plan_id, tier, "
            "features, limits, grace_days, past_due_since, started_at, position) VALUES "
            "(:id, :user_id, :status, :plan_id, :tier, :features, :limits, :grace_days, "
            ":past_due_since, :t, :position)",
            id=str(e.originator_id),
            user_id=e.user_id,
            status=e.status,
            t=e.stripe_created,
            past_due_since=e.stripe_created if e.status == "past_due" else None,
            position=w.position,
            **self._plan(e.price),
        )

    def _set(self, w: Writer, e: Any, assignments: str, **params: Any) -> None:
        w.execute(
            "UPDATE {entitlements} SET " + assignments + ", position = :position "
            "WHERE subscription_id = :id",
            id=str(e.originator_id),
            position=w.position,
            **params,
        )

    @apply.register
    def _(self, e: Subscription.StatusChanged, w: Writer) -> None:
        since = {"past_due": past_due_since_sql(), "active": "NULL", "trialing": "NULL"}.get(
            e.status, "past_due_since"
        )
        self._set(
            w, e, f"status = :status, past_due_since = {since}", status=e.status, t=e.stripe_created
        )

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        self._set(w, e, "status = :status", status=e.status)

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        self._set(
            w,
            e,
            "plan_id = :plan_id, tier = :tier, features = :features, "
            "limits = :limits, grace_days = :grace_days",
            **self._plan(e.price),
        )

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        self._set(w, e, "user_id = :user_id", user_id=e.user_id)


def entitlements_of(c: Cursor, catalog: Catalog, user_id: str, now: float) -> dict[str, Any]:
    rows = c.query(
        f"SELECT * FROM entitlements WHERE user_id = :user_id {CURRENT_ORDER} LIMIT 1",
        {"user_id": user_id},
    )
    row = rows[0] if rows else None
    if row and is_active(row["status"], row["past_due_since"], row["grace_days"], now):
        return {
            "tier": row["tier"],
            "plan_id": row["plan_id"],
            "features": json.loads(row["features"]),
            "limits": json.loads(row["limits"]),
        }
    free = catalog.free_plan
    return {
        "tier": free.tier,
        "plan_id": free.id,
        "features": list(free.features),
        "limits": dict(free.limits),
    }
