"""How our value types are written into the log's JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from eventsourcing.persistence import Transcoding

from ledger.domain.money import Price


class PriceAsDict(Transcoding):
    type = Price
    name = "price"

    def encode(self, obj: Price) -> dict[str, Any]:
        return asdict(obj)

    def decode(self, data: dict[str, Any]) -> Price:
        return Price(**data)
