"""The erasure of a user's personal data: its customers' keys were deleted. Its
events carry the request id of the operator's API call (`ApiCaused`; None when
`ledger erase` recorded them)."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import ApiCaused
from ledger.domain.ids import NAMESPACE


class Erasure(Aggregate):
    class Requested(ApiCaused, Aggregate.Created):
        TOPIC = "ledger.erasure:Erasure.Requested"
        user_id: str

    class PersonalDataErased(ApiCaused, Aggregate.Event):
        TOPIC = "ledger.erasure:Erasure.PersonalDataErased"
        stripe_customer_ids: list[str]
        keys_deleted: int

    @event(Requested)
    def __init__(self, user_id: str, request_id: str | None = None) -> None:
        self.user_id = user_id
        self.stripe_customer_ids: list[str] = []

    @staticmethod
    def create_id(user_id: str) -> UUID:
        return uuid5(NAMESPACE, f"erasure:{user_id}")

    @event(PersonalDataErased)
    def erased(
        self, stripe_customer_ids: list[str], keys_deleted: int, request_id: str | None = None
    ) -> None:
        self.stripe_customer_ids = sorted({*self.stripe_customer_ids, *stripe_customer_ids})

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.erasure:Erasure"

    class Created(Aggregate.Created):
        TOPIC = "ledger.erasure:Erasure.Created"
