"""Money and prices in integer minor units, and their transcoding for the log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from eventsourcing.persistence import Transcoding


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


class PriceAsDict(Transcoding):
    type = Price
    name = "price"

    def encode(self, obj: Price) -> dict[str, Any]:
        return asdict(obj)

    def decode(self, data: dict[str, Any]) -> Price:
        return Price(**data)
