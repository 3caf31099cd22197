"""The catalog's value types hold their constraints without the loader: a value
made in code is checked as a plans file is."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.domain.catalog import Catalog, CatalogPrice, Plan
from ledger.domain.money import Price


def price(**changes: Any) -> CatalogPrice:
    given = {"id": "price_m", "name": "Monthly", "amount": 999, "currency": "usd"}
    return CatalogPrice(**{**given, "interval": "month", **changes})


def catalog(*prices: CatalogPrice, **changes: Any) -> Catalog:
    plans = (
        Plan(id="free", name="Free", tier="free"),
        Plan(id="pro", name="Pro", tier="pro", prices=prices),
    )
    return Catalog(**{"fallback_tier": "pro", "free_tier": "free", "plans": plans, **changes})


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda: price(id="prod_x"), "id 'prod_x' does not match"),
        (lambda: price(amount=-1), "amount -1 is less than 0"),
        (lambda: price(currency="USD"), "currency 'USD' does not match"),
        (lambda: price(interval="fortnight"), "interval 'fortnight' does not match"),
        (lambda: Plan(id="Pro", name="Pro", tier="pro"), "id 'Pro' does not match"),
        (lambda: Plan(id="pro", name="Pro", tier="pro", grace_days=61), "grace_days 61 is more"),
        (lambda: catalog(free_tier="gratis"), "free_tier 'gratis' is the tier of no plan"),
        (lambda: catalog(price(), price(id="price_y", lookup_key="price_m")), "'price_m' appears"),
    ],
)
def test_a_value_breaking_a_constraint_is_refused(make: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        make()


def test_lookups_by_id_lookup_key_and_tier() -> None:
    c = catalog(price(lookup_key="pro_monthly"), price(id="price_y", interval="year"))
    assert c.find("price_y")[1].interval == "year"  # type: ignore[index]
    assert c.find("price_gone", "pro_monthly")[1].id == "price_m"  # type: ignore[index]
    assert c.find("price_gone") is None
    plan, name, known = c.resolve(Price("price_m", 999, "usd", "month"))
    assert (plan.id, name, known) == ("pro", "Monthly", True)
    assert c.resolve(None) == (c.fallback_plan, "Pro", False)
    assert (c.free_plan.id, c.plan_of_tier("pro").id) == ("free", "pro")


def test_values_are_frozen() -> None:
    with pytest.raises(AttributeError):
        price().amount = 1  # type: ignore[misc]
