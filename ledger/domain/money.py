"""Money and prices, in integer minor units."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """A recurring price as the ledger knows it (never a Stripe object)."""

    stripe_price_id: str
    unit_amount: int  # minor units, e.g. 999 for 9.99 USD
    currency: str
    interval: str  # "month" | "year" | "week" | "day"
    interval_count: int = 1
    lookup_key: str | None = None
    stripe_product_id: str | None = None
    nickname: str | None = None
