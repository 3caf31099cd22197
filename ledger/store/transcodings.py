"""How our value types are written into the log's JSON."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from eventsourcing.persistence import Transcoding

from ledger.domain.money import Price

_PRICE_FIELDS = fields(Price)


class PriceAsDict(Transcoding):
    type = Price
    name = "price"

    def encode(self, obj: Price) -> dict[str, Any]:
        # what asdict gives for its flat fields, without its deep copy: 5.5 -> 0.5 us
        return {f.name: getattr(obj, f.name) for f in _PRICE_FIELDS}

    def decode(self, data: dict[str, Any]) -> Price:
        return Price(**data)
