"""The plan catalog (a YAML file): plans, their Stripe prices (by id and by
lookup_key), tier, features, limits and payment grace days."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ledger.domain.money import Price

DEFAULT_PLANS_FILE = Path(__file__).with_name("plans.yaml")


class PlansFileError(ValueError):
    """The plans file is not valid; the message names the file and the line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogPrice(_Model):
    id: str = Field(pattern=r"^(price|plan)_[A-Za-z0-9_]+$")
    lookup_key: str | None = None
    name: str
    amount: int = Field(ge=0)  # minor units
    currency: str = Field(pattern=r"^[a-z]{3}$")
    interval: str = Field(pattern=r"^(day|week|month|year)$")


class Plan(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    tier: str
    grace_days: int = Field(0, ge=0, le=60)
    features: tuple[str, ...] = ()
    limits: dict[str, int] = {}
    prices: tuple[CatalogPrice, ...] = ()


class Catalog(_Model):
    fallback_tier: str
    free_tier: str
    plans: tuple[Plan, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        tiers = {p.tier for p in self.plans}
        for field in ("fallback_tier", "free_tier"):
            if getattr(self, field) not in tiers:
                raise ValueError(f"{field} {getattr(self, field)!r} is the tier of no plan")
        seen: set[str] = set()
        for plan in self.plans:
            for price in plan.prices:
                for key in (price.id, price.lookup_key):
                    if key is not None and key in seen:
                        raise ValueError(f"price {key!r} appears twice")
                    if key is not None:
                        seen.add(key)
        return self

    @cached_property
    def _prices(self) -> dict[str, tuple[Plan, CatalogPrice]]:
        index: dict[str, tuple[Plan, CatalogPrice]] = {}
        for plan in self.plans:
            for price in plan.prices:
                index[price.id] = (plan, price)
                if price.lookup_key:
                    index[f"lookup:{price.lookup_key}"] = (plan, price)
        return index

    def find(
        self, price_id: str | None, lookup_key: str | None = None
    ) -> tuple[Plan, CatalogPrice] | None:
        """The plan and price of a Stripe price, by id, else by lookup_key."""
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

    def plan_of_tier(self, tier: str) -> Plan:
        return next(p for p in self.plans if p.tier == tier)

    @property
    def fallback_plan(self) -> Plan:
        return self.plan_of_tier(self.fallback_tier)

    @property
    def free_plan(self) -> Plan:
        return self.plan_of_tier(self.free_tier)


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or DEFAULT_PLANS_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlansFileError(f"{path}: cannot read the plans file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise PlansFileError(f"{path}{where}: not valid YAML: {exc}") from None
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        line = _line_of(root, loc)
        where = ".".join(str(p) for p in loc) or "top level"
        raise PlansFileError(f"{path}:{line}: {where}: {first['msg']}") from None


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """The line of the deepest YAML node on the error's path (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
            if child is None:  # a missing key: point at the mapping
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
