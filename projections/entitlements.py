"""Per user: the features and limits of the current plan (the free plan's when
there is no active subscription)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.catalog import Catalog
from ledger.domain.gate import Gate, Holding
from ledger.domain.ids import id_text
from ledger.domain.money import Price
from ledger.domain.subscription import Subscription
from projections.base import Held, SqlProjection, Writer
from projections.store import Cursor
from projections.subscription_status import CURRENT


class EntitlementsProjection(SqlProjection):
    """Per subscription, what its plan grants. Whether it grants it now (status,
    payment grace) and which subscription is the user's current one are
    subscription_status's to say: one rule, the one get-subscription answers by."""

    name = "entitlements"
    rebuild_cost = 1.5
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

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory: the rows of its plan changes' subscriptions
        read in one query, changed by the handlers, written back in one statement."""
        rows = w.memo[_HELD] = Held(type(self), "entitlements", "subscription_id")
        changes = Subscription.PlanChanged
        rows.load(w, {id_text(e.originator_id) for _, e in events if type(e) is changes})
        super().apply_all(events, w)
        rows.write(w)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        row = {"subscription_id": id_text(e.originator_id), "position": w.position}
        w.memo[_HELD].add(row | self._plan(e.price))

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        w.memo[_HELD].change(id_text(e.originator_id), position=w.position, **self._plan(e.price))


_HELD = "entitlements:held"  # in `Writer.memo`


# The user's current subscription (as get-subscription picks it) and what its plan grants.
HOLDING = (
    "SELECT c.status, c.past_due_since, c.grace_days, e.plan_id, e.tier, e.features, e.limits "
    f"FROM ({CURRENT}) c LEFT JOIN entitlements e ON e.subscription_id = c.subscription_id"
)


def holding(row: Mapping[str, Any] | None) -> Holding | None:
    """The gate's view of a HOLDING row (None: the user has no subscription)."""
    if row is None:
        return None
    return Holding(
        status=row["status"],
        past_due_since=row["past_due_since"],
        grace_days=row["grace_days"],
        plan_id=row["plan_id"],
        tier=row["tier"],
        features=tuple(json.loads(row["features"])) if row["features"] else (),
        limits=json.loads(row["limits"]) if row["limits"] else {},
    )


def holding_of(c: Cursor, user_id: str) -> Holding | None:
    rows = c.query(HOLDING, {"user_id": user_id})
    return holding(rows[0] if rows else None)


def entitlements_of(c: Cursor, catalog: Catalog, user_id: str, now: float) -> dict[str, Any]:
    """What the user's current subscription grants while get-subscription calls it
    active (the free plan's otherwise, or while this projection has yet to see it)."""
    granted = Gate(catalog).entitlement(holding_of(c, user_id), now)
    return {
        "tier": granted.tier,
        "plan_id": granted.plan_id,
        "features": list(granted.features),
        "limits": dict(granted.limits),
    }
