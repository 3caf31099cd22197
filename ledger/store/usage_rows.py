"""A usage record's row of the log, written directly: the bytes the library's
mapper writes for its `UsageRecord.Recorded` event (`Usage.new_events`), made
without the event object, its `vars` copy and the JSON encoder's call back for
the timestamp. A batch of 1,000 records spent most of its writer's time there.
tests/unit/test_usage_record.py holds it to the mapper's output, byte for byte."""

from __future__ import annotations

from json.encoder import encode_basestring  # what json writes a str as, ensure_ascii=False

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.domain.usage import Usage, UsageRecord
from ledger.store.library import LeanMapper

TOPIC = get_topic(UsageRecord.Recorded)
_ORIGIN = ',"originator_topic":' + encode_basestring(UsageRecord.TOPIC) + ',"user_id":'


class UsageRows:
    """Rows of usage records made at one `timestamp` (one call of
    `Ledger.stored_events`): the timestamp, and each user id and metric name, are
    written as JSON once for all of them."""

    def __init__(self, mapper: LeanMapper, timestamp: str) -> None:
        """`timestamp`: the rows' time as their JSON begins (`timestamp_json`)."""
        self._mapper = mapper
        self._head = timestamp + _ORIGIN
        self._written: dict[str, str] = {}  # a user id or metric name, as JSON

    def _json(self, value: str) -> str:
        written = self._written.get(value)
        if written is None:
            written = self._written[value] = encode_basestring(value)
        return written

    def row(self, usage: Usage) -> StoredEvent:
        """The row of the record's one event. Falls back on the mapper for what
        the direct writing does not know (a value of another type)."""
        if not (
            type(usage.quantity) is int
            and type(usage.occurred_at) is int
            and type(usage.user_id) is str
            and type(usage.metric) is str
            and type(usage.idempotency_key) is str
        ):
            [event] = usage.new_events()
            return self._mapper.to_stored_event(event)
        state = (
            f'{self._head}{self._json(usage.user_id)},"metric":{self._json(usage.metric)},'
            f'"quantity":{usage.quantity},'
            f'"idempotency_key":{encode_basestring(usage.idempotency_key)},'
            f'"occurred_at":{usage.occurred_at}}}'
        )
        return self._mapper.stored_json(usage.aggregate_id, TOPIC, state)
