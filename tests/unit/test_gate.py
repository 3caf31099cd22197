"""The gate's rules, pure: reasons, the cheapest plan that has a feature, and the
entitlement it agrees with."""

from __future__ import annotations

import pytest

from ledger.domain.catalog import Catalog, CatalogPrice, Plan
from ledger.domain.gate import Gate, Holding, UnknownFeature, Verdict
from ledger.plans import load_catalog

DAY = 86_400
NOW = 1_767_225_600


def price(pid: str, amount: int, interval: str) -> CatalogPrice:
    return CatalogPrice(id=pid, name=pid, amount=amount, currency="usd", interval=interval)


def test_upgrade_to_is_the_cheapest_plan_by_its_lowest_monthly_price() -> None:
    catalog = Catalog(
        fallback_tier="a",
        free_tier="free",
        plans=(
            Plan(id="free", name="Free", tier="free", features=("basic",)),
            Plan(id="a", name="A", tier="a", features=("x",),
                 prices=(price("price_a", 1000, "month"),)),
            # 10,800 a year is 900 a month: cheaper than A's 1,000
            Plan(id="b", name="B", tier="b", features=("x", "y"),
                 prices=(price("price_b", 1200, "month"), price("price_by", 10800, "year"))),
            Plan(id="c", name="C", tier="c", features=("z",)),  # no price: never offered
        ),
    )  # fmt: skip
    gate = Gate(catalog)
    assert [gate.upgrade_to(f) for f in ("x", "y", "z", "basic")] == ["b", "b", None, None]


def holding(status: str, since: int | None = None, plan: str = "lisa_premium") -> Holding:
    return Holding(
        status=status, past_due_since=since, grace_days=3, plan_id=plan, tier="premium",
        features=("status_check", "premium_features", "priority_support"),
        limits={"saved_items": 10000},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("held", "feature", "verdict"),
    [
        (None, "status_check", Verdict(True)),
        (None, "premium_features", Verdict(False, "not_in_plan", "lisa_premium")),
        (holding("active"), "premium_features", Verdict(True)),
        (holding("active"), "sso", Verdict(False, "not_in_plan", "enterprise")),
        (holding("past_due", NOW - DAY), "premium_features", Verdict(True)),
        (holding("past_due", NOW - 4 * DAY), "premium_features",
         Verdict(False, "grace_ended", "lisa_premium")),
        (holding("unpaid"), "premium_features", Verdict(False, "inactive", "lisa_premium")),
        (holding("unpaid"), "status_check", Verdict(True)),  # the free plan has it
        (holding("canceled"), "premium_features", Verdict(False, "not_in_plan", "lisa_premium")),
        (holding("incomplete"), "api_access", Verdict(False, "not_in_plan", "starter")),
    ],
)  # fmt: skip
def test_reasons(held: Holding | None, feature: str, verdict: Verdict) -> None:
    gate = Gate(load_catalog())
    assert gate.check(held, feature, NOW) == verdict
    assert (feature in gate.entitlement(held, NOW).features) == verdict.allowed


def test_in_grace_until_and_unknown_features() -> None:
    gate = Gate(load_catalog())
    assert gate.entitlement(holding("past_due", NOW - DAY), NOW).in_grace_until == NOW + 2 * DAY
    assert gate.entitlement(holding("active"), NOW).in_grace_until is None
    with pytest.raises(UnknownFeature):
        gate.check(None, "teleportation", NOW)
