"""The plan catalog's value types: plans, their Stripe prices (by id and by
lookup_key), tier, features, limits and payment grace days, the usage metrics
with each plan's allowance, with the lookups.

Each field's constraints are written once, in its metadata, in the words of
pydantic's `Field` (pattern, ge, le): the loader in `ledger/plans.py` has pydantic
check them (it reads a stdlib dataclass field's metadata), and `__post_init__`
checks them for a value made in code. `__pydantic_config__` is a plain dict
here, for the loader; the domain imports nothing of pydantic."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from ledger.domain.money import Price

_FORBID_EXTRA = {"extra": "forbid"}  # a key the value types do not name is an error


def _check_constraints(value: Any) -> None:
    for f in fields(value):
        given, rules = getattr(value, f.name), f.metadata
        if given is None:
            continue
        if "pattern" in rules and not re.search(rules["pattern"], given):
            raise ValueError(f"{f.name} {given!r} does not match {rules['pattern']}")
        if "ge" in rules and given < rules["ge"]:
            raise ValueError(f"{f.name} {given!r} is less than {rules['ge']}")
        if "le" in rules and given > rules["le"]:
            raise ValueError(f"{f.name} {given!r} is more than {rules['le']}")


@dataclass(frozen=True, kw_only=True)
class CatalogPrice:
    __pydantic_config__ = _FORBID_EXTRA

    id: str = field(metadata={"pattern": r"^(price|plan)_[A-Za-z0-9_]+$"})
    lookup_key: str | None = None
    # Former ids (or lookup keys) of this price: logs written with them still resolve.
    aliases: tuple[str, ...] = ()
    name: str
    amount: int = field(metadata={"ge": 0})  # minor units
    currency: str = field(metadata={"pattern": r"^[a-z]{3}$"})
    interval: str = field(metadata={"pattern": r"^(day|week|month|year)$"})

    def __post_init__(self) -> None:
        _check_constraints(self)


@dataclass(frozen=True, kw_only=True)
class Plan:
    __pydantic_config__ = _FORBID_EXTRA

    id: str = field(metadata={"pattern": r"^[a-z][a-z0-9_]*$"})
    name: str
    tier: str
    grace_days: int = field(default=0, metadata={"ge": 0, "le": 60})
    features: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    prices: tuple[CatalogPrice, ...] = ()
    # What a new subscription to this plan starts with, unless the caller says.
    trial_days: int = field(default=0, metadata={"ge": 0, "le": 730})
    # A change to a plan of higher rank is an upgrade (now); lower, a downgrade
    # (at the period end).
    rank: int = field(default=0, metadata={"ge": 0})
    # How Stripe charges an upgrade's difference.
    proration_behavior: str = field(
        default="always_invoice", metadata={"pattern": r"^(always_invoice|create_prorations|none)$"}
    )

    def __post_init__(self) -> None:
        _check_constraints(self)


@dataclass(frozen=True, kw_only=True)
class Allowance:
    """What a plan includes of a metric in each billing period, and what happens
    past it: `hard` (the gate refuses), `soft` (allowed, the overage is billed) or
    `none` (no limit, nothing billed)."""

    __pydantic_config__ = _FORBID_EXTRA

    included: int = field(metadata={"ge": 0})
    limit: str = field(default="soft", metadata={"pattern": r"^(hard|soft|none)$"})

    def __post_init__(self) -> None:
        _check_constraints(self)


UNLIMITED = Allowance(included=0, limit="none")


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A metered quantity: `sum` adds the records of a period (requests), `max`
    keeps its highest reading (a level, such as storage). Overage is billed at
    `overage_unit_amount` minor units a unit, through the Stripe billing meter
    `stripe_meter_event` when one is named, else as an invoice item."""

    __pydantic_config__ = _FORBID_EXTRA

    name: str = field(metadata={"pattern": r"^[a-z][a-z0-9_]{0,63}$"})
    unit: str
    aggregation: str = field(metadata={"pattern": r"^(sum|max)$"})
    overage_unit_amount: int = field(metadata={"ge": 0})  # minor units per unit over
    currency: str = field(metadata={"pattern": r"^[a-z]{3}$"})
    stripe_meter_event: str | None = field(
        default=None, metadata={"pattern": r"^[A-Za-z0-9_.:-]{1,100}$"}
    )
    max_quantity: int = field(default=1_000_000_000, metadata={"ge": 1})  # one record's
    plans: dict[str, Allowance] = field(default_factory=dict)  # plan id -> allowance

    def __post_init__(self) -> None:
        _check_constraints(self)

    def allowance(self, plan_id: str) -> Allowance:
        """A plan the metric does not name has no limit and is billed nothing."""
        return self.plans.get(plan_id, UNLIMITED)

    def overage(self, total: int, plan_id: str) -> tuple[int, int]:
        """(units over the included amount, their amount in minor units); nothing
        is billed without a limit."""
        allowance = self.allowance(plan_id)
        if allowance.limit == "none":
            return 0, 0
        units = max(0, total - allowance.included)
        return units, units * self.overage_unit_amount


@dataclass(frozen=True, kw_only=True)
class Catalog:
    __pydantic_config__ = _FORBID_EXTRA

    fallback_tier: str
    free_tier: str
    plans: tuple[Plan, ...]
    metrics: tuple[Metric, ...] = ()
    # how far in the past a usage record's occurred_at may be (seconds)
    usage_allowed_lateness: int = field(default=3 * 86_400, metadata={"ge": 0, "le": 2_678_400})

    def __post_init__(self) -> None:
        _check_constraints(self)
        plan_ids = {p.id for p in self.plans}
        names: set[str] = set()
        for metric in self.metrics:
            if metric.name in names:
                raise ValueError(f"metric {metric.name!r} appears twice")
            names.add(metric.name)
            for plan_id in metric.plans:
                if plan_id not in plan_ids:
                    raise ValueError(f"metric {metric.name!r} names no plan {plan_id!r}")
        tiers = {p.tier for p in self.plans}
        for name in ("fallback_tier", "free_tier"):
            if getattr(self, name) not in tiers:
                raise ValueError(f"{name} {getattr(self, name)!r} is the tier of no plan")
        seen: set[str] = set()
        for plan in self.plans:
            for price in plan.prices:
                for key in (price.id, price.lookup_key, *price.aliases):
                    if key is not None and key in seen:
                        raise ValueError(f"price {key!r} appears twice")
                    if key is not None:
                        seen.add(key)

    @cached_property
    def _prices(self) -> dict[str, tuple[Plan, CatalogPrice]]:
        index: dict[str, tuple[Plan, CatalogPrice]] = {}
        for plan in self.plans:
            for price in plan.prices:
                index[price.id] = (plan, price)
                if price.lookup_key:
                    index[f"lookup:{price.lookup_key}"] = (plan, price)
                for alias in price.aliases:
                    index.setdefault(alias, (plan, price))
                    index.setdefault(f"lookup:{alias}", (plan, price))
        return index

    def find(
        self, price_id: str | None, lookup_key: str | None = None
    ) -> tuple[Plan, CatalogPrice] | None:
        """The plan and price of a Stripe price, by id, else by lookup_key (former
        ids and lookup keys, its `aliases`, count as both)."""
        found = self._prices.get(price_id or "")
        if found is None and lookup_key:
            found = self._prices.get(f"lookup:{lookup_key}")
        return found

    def resolve(self, price: Price | None) -> tuple[Plan, str, bool]:
        """(plan, display name of the price, whether the price is in the catalog).
        A price in no plan falls back to the catalog's fallback tier."""
        if price is None:
            return self.fallback_plan, self.fallback_plan.name, False
        found = self.find(price.stripe_price_id, price.lookup_key)
        if found is not None:
            return found[0], found[1].name, True
        return self.fallback_plan, price.nickname or self.fallback_plan.name, False

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def plan(self, plan_id: str | None) -> Plan:
        """A plan by id; an unknown one (since removed from the file) is the free plan."""
        return next((p for p in self.plans if p.id == plan_id), self.free_plan)

    def plan_of_tier(self, tier: str) -> Plan:
        return next(p for p in self.plans if p.tier == tier)

    @property
    def fallback_plan(self) -> Plan:
        return self.plan_of_tier(self.fallback_tier)

    @property
    def free_plan(self) -> Plan:
        return self.plan_of_tier(self.free_tier)
