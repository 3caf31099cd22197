"""A usage record: one fact of metered usage (a user, a metric, a quantity, when),
recorded once per the user's idempotency key."""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import name_uuid


class UsageRecord(Aggregate):
    class Recorded(Aggregate.Created):
        TOPIC = "ledger.usage:UsageRecord.Recorded"
        user_id: str
        metric: str
        quantity: int
        idempotency_key: str
        occurred_at: int  # unix seconds

    @event(Recorded)
    def __init__(
        self, user_id: str, metric: str, quantity: int, idempotency_key: str, occurred_at: int
    ) -> None:
        self.user_id = user_id
        self.metric = metric
        self.quantity = quantity
        self.idempotency_key = idempotency_key
        self.occurred_at = occurred_at

    @staticmethod
    def create_id(user_id: str, idempotency_key: str) -> UUID:
        """One record per user and key: a second append of the same key conflicts."""
        return name_uuid(f"usage:{user_id}:{idempotency_key}")

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.usage:UsageRecord"

    class Created(Aggregate.Created):
        TOPIC = "ledger.usage:UsageRecord.Created"


class _Fields(NamedTuple):
    user_id: str
    metric: str
    quantity: int
    idempotency_key: str
    occurred_at: int
    aggregate_id: UUID  # made with the record: every record's is needed


class Usage(_Fields):
    """A checked usage record, ready to be recorded (through the group commit). A
    tuple: a batch makes 1,000, and a frozen dataclass cost a third more to make."""

    __slots__ = ()

    def __new__(
        cls, user_id: str, metric: str, quantity: int, idempotency_key: str, occurred_at: int
    ) -> Usage:
        return tuple.__new__(
            cls,
            (
                user_id,
                metric,
                quantity,
                idempotency_key,
                occurred_at,
                UsageRecord.create_id(user_id, idempotency_key),
            ),
        )

    def new_events(self) -> list[UsageRecord.Recorded]:
        """The record's one event, as `new_aggregate().collect_events()` gives it,
        made directly: the fast path of a batch of records (no aggregate built)."""
        return [
            UsageRecord.Recorded(
                originator_id=self.aggregate_id,
                originator_version=1,
                timestamp=UsageRecord.Recorded.create_timestamp(),
                originator_topic=UsageRecord.TOPIC,
                user_id=self.user_id,
                metric=self.metric,
                quantity=self.quantity,
                idempotency_key=self.idempotency_key,
                occurred_at=self.occurred_at,
            )
        ]

    def new_aggregate(self) -> UsageRecord:
        return UsageRecord(
            user_id=self.user_id,
            metric=self.metric,
            quantity=self.quantity,
            idempotency_key=self.idempotency_key,
            occurred_at=self.occurred_at,
        )
