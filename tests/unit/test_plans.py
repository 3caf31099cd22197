"""The plan catalog: the shipped default, lookups, and clear errors for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.domain.money import Price
from ledger.plans import PlansFileError, load_catalog


def test_the_default_catalog_holds_the_products_of_both_specs() -> None:
    catalog = load_catalog()
    amounts = {p.id: (p.amount, p.interval) for plan in catalog.plans for p in plan.prices}
    assert amounts["price_lisa_premium_monthly"] == (999, "month")
    assert amounts["price_lisa_premium_annual"] == (9990, "year")
    assert amounts["price_starter_monthly"] == (1900, "month")
    assert amounts["price_starter_yearly"] == (19000, "year")
    assert amounts["price_professional_monthly"] == (4900, "month")
    assert amounts["price_professional_yearly"] == (49000, "year")
    assert {p.id for p in catalog.plans} >= {
        "free",
        "lisa_premium",
        "starter",
        "professional",
        "enterprise",
    }
    assert catalog.free_plan.tier == "free"


def test_the_former_annual_ids_still_resolve_to_the_yearly_prices() -> None:
    catalog = load_catalog()
    for old, new in [
        ("price_starter_annual", "price_starter_yearly"),
        ("price_professional_annual", "price_professional_yearly"),
    ]:
        found = catalog.find(old)
        assert found is not None and found[1].id == new
    plan, name, known = catalog.resolve(
        Price("price_unknown", 49000, "usd", "year", lookup_key="professional_annual")
    )
    assert (plan.id, name, known) == ("professional", "Professional - Yearly", True)


def test_plans_declare_rank_trial_days_and_the_proration_of_upgrades() -> None:
    plans = {p.id: p for p in load_catalog().plans}
    assert plans["free"].rank < plans["starter"].rank < plans["professional"].rank
    assert plans["professional"].rank < plans["enterprise"].rank
    assert plans["starter"].trial_days == plans["professional"].trial_days == 14
    assert {p.proration_behavior for p in plans.values()} == {"always_invoice"}


def test_a_bad_proration_behavior_or_trial_is_refused(tmp_path: Path) -> None:
    for line, word in [("proration_behavior: sometimes", "proration_behavior"),
                       ("trial_days: 9999", "trial_days")]:  # fmt: skip
        path = tmp_path / "plans.yaml"
        path.write_text(
            "fallback_tier: free\nfree_tier: free\nplans:\n"
            f"  - id: free\n    name: Free\n    tier: free\n    {line}\n"
        )
        with pytest.raises(PlansFileError, match=word):
            load_catalog(path)


def test_prices_are_found_by_id_or_lookup_key_and_unknown_ones_fall_back() -> None:
    catalog = load_catalog()
    plan, name, known = catalog.resolve(
        Price("price_x", 4900, "usd", "month", lookup_key="professional_monthly")
    )
    assert (plan.id, name, known) == ("professional", "Professional - Monthly", True)
    plan, name, known = catalog.resolve(Price("price_x", 1, "usd", "month", nickname="Legacy"))
    assert (plan.tier, name, known) == ("premium", "Legacy", False)


BAD = """\
fallback_tier: premium
free_tier: free
plans:
  - id: free
    name: Free
    tier: free
  - id: premium
    name: Premium
    tier: premium
    prices:
      - id: price_ok
        name: Monthly
        amount: -5
        currency: usd
        interval: month
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BAD, ":13: plans.1.prices.0.amount: Input should be greater than or equal to 0"),
        (
            BAD.replace("interval: month", "interval: fortnight").replace("-5", "5"),
            ":15: plans.1.prices.0.interval",
        ),
        (
            BAD.replace("free_tier: free", "free_tier: gratis").replace("-5", "5"),
            "free_tier 'gratis' is the tier of no plan",
        ),
        ("plans: [\n  {id: x\n", ":3: not valid YAML"),
        (
            BAD.replace("    tier: premium\n", "    tier: premium\n    colour: red\n").replace(
                "-5", "5"
            ),
            ":10: plans.1.colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_plans_file_is_refused_naming_the_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text(text)
    with pytest.raises(PlansFileError) as raised:
        load_catalog(path)
    assert str(raised.value).startswith(str(path))
    assert expected in str(raised.value)


def test_a_missing_plans_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlansFileError, match="cannot read the plans file"):
        load_catalog(tmp_path / "nope.yaml")
