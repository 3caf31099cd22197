"""The billing service's pure rules: what kind of change a plan change is, and
which redirect URLs are allowed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.billing import classify, redirect_allowed
from ledger.plans import load_catalog

CATALOG = load_catalog()


def found(price_id: str):  # type: ignore[no-untyped-def]
    result = CATALOG.find(price_id)
    assert result is not None
    return result


def test_a_higher_rank_or_a_longer_interval_is_an_upgrade_now() -> None:
    assert classify(found("price_starter_monthly"), found("price_professional_monthly")) == (
        "upgrade",
        "now",
    )
    assert classify(found("price_starter_monthly"), found("price_starter_yearly")) == (
        "upgrade",
        "now",
    )
    assert classify(found("price_professional_yearly"), found("price_starter_yearly")) == (
        "downgrade",
        "period_end",
    )
    assert classify(found("price_starter_yearly"), found("price_starter_monthly")) == (
        "downgrade",
        "period_end",
    )
    assert classify(found("price_starter_annual"), found("price_starter_yearly")) == ("same", "now")
    assert classify(None, found("price_starter_monthly")) == ("upgrade", "now")


PRICES = [p.id for plan in CATALOG.plans for p in plan.prices]


@given(st.sampled_from(PRICES), st.sampled_from(PRICES))
def test_a_change_and_its_reverse_are_opposites(a: str, b: str) -> None:
    there, back = classify(found(a), found(b))[0], classify(found(b), found(a))[0]
    if a == b:
        assert there == back == "same"
    else:
        assert {there, back} == {"upgrade", "downgrade"}


PREFIXES = ["https://app.example.com", "https://shop.example.org/billing/"]


def test_redirects_must_start_with_an_allowed_prefix_at_a_boundary() -> None:
    allowed = [
        "https://app.example.com",
        "https://app.example.com/billing?done=1",
        "https://app.example.com#top",
        "https://shop.example.org/billing/ok",
    ]
    refused = [
        "https://app.example.com.evil.test/",
        "https://app.example.community/",
        "http://app.example.com/",
        "https://shop.example.org/billingx",
        "javascript:alert(1)",
        "",
    ]
    assert all(redirect_allowed(u, PREFIXES) for u in allowed)
    assert not any(redirect_allowed(u, PREFIXES) for u in refused)
    assert not redirect_allowed("https://app.example.com/", [])


@given(st.text(max_size=60))
def test_an_allowed_redirect_always_extends_an_allowed_prefix(url: str) -> None:
    if redirect_allowed(url, PREFIXES):
        assert any(url.startswith(p) for p in PREFIXES)
