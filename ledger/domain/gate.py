"""The feature gate's rules: what a user's current subscription grants now (the
free plan's when nothing does), and why a feature is refused, with the cheapest
plan that has it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ledger.domain.catalog import Catalog, CatalogPrice
from ledger.domain.status import DAY, Status, grants_plan, is_terminal

NOT_IN_PLAN = "not_in_plan"
INACTIVE = "inactive"
GRACE_ENDED = "grace_ended"

# Prices compared by what they cost a month (a year's is a twelfth of it).
_PER_MONTH = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}


class UnknownFeature(LookupError):
    """No plan of the catalog has a feature of that name."""


@dataclass(frozen=True)
class Holding:
    """What the gate reads of the user's current subscription (None: the user has
    none): its status and grace, and what its plan grants (None while the
    entitlements projection has yet to see it)."""

    status: str
    past_due_since: int | None
    grace_days: int | None
    plan_id: str | None = None
    tier: str | None = None
    features: tuple[str, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Entitlement:
    tier: str
    plan_id: str
    active: bool
    features: tuple[str, ...]
    limits: Mapping[str, int]
    in_grace_until: int | None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str | None = None
    upgrade_to: str | None = None


ALLOWED = Verdict(True)


class Gate:
    """The rules over one catalog; what depends on the catalog only is worked out once."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.features = frozenset(f for p in catalog.plans for f in p.features)
        free = catalog.free_plan
        self._free = Entitlement(free.tier, free.id, False, free.features, free.limits, None)
        self._upgrade = {f: _cheapest_with(catalog, f) for f in self.features}

    def upgrade_to(self, feature: str) -> str | None:
        """The cheapest plan (by its lowest monthly price) that has the feature."""
        return self._upgrade.get(feature)

    def entitlement(self, holding: Holding | None, now: float) -> Entitlement:
        if holding is None:
            return self._free
        active = grants_plan(holding.status, holding.past_due_since, holding.grace_days, now)
        if not active or holding.plan_id is None or holding.tier is None:
            return replace(self._free, active=active)
        return Entitlement(
            tier=holding.tier,
            plan_id=holding.plan_id,
            active=True,
            features=holding.features,
            limits=holding.limits,
            in_grace_until=_grace_end(holding) if holding.status == Status.PAST_DUE else None,
        )

    def check(self, holding: Holding | None, feature: str, now: float) -> Verdict:
        """Whether the user may use `feature` now; the same answer `entitlement` gives."""
        if feature not in self.features:
            raise UnknownFeature(feature)
        granted = self.entitlement(holding, now)
        if feature in granted.features:
            return ALLOWED
        upgrade = self._upgrade[feature]
        if (
            holding is None
            or is_terminal(holding.status)
            or granted.active
            or feature not in holding.features
        ):
            return Verdict(False, NOT_IN_PLAN, upgrade)
        if holding.status == Status.PAST_DUE:
            return Verdict(False, GRACE_ENDED, upgrade)
        return Verdict(False, INACTIVE, upgrade)


def _grace_end(holding: Holding) -> int | None:
    if holding.past_due_since is None:
        return None
    return holding.past_due_since + (holding.grace_days or 0) * DAY


def _monthly(price: CatalogPrice) -> float:
    return price.amount * _PER_MONTH[price.interval]


def _cheapest_with(catalog: Catalog, feature: str) -> str | None:
    priced = [
        (min(_monthly(p) for p in plan.prices), index, plan.id)
        for index, plan in enumerate(catalog.plans)
        if feature in plan.features and plan.prices
    ]
    return min(priced)[2] if priced else None
