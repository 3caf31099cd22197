"""A usage record's row of the log, written directly: the bytes the library's
mapper writes for its `UsageRecord.Recorded` event (`Usage.new_events`), made
without the event object, its `vars` copy and the JSON encoder's call back for
the timestamp. A batch of 1,000 records spent most of its writer's time there.
tests/unit/test_usage_record.py holds it to the mapper's output, byte for byte."""

from __future__ import annotations

from datetime import datetime
from json.encoder import encode_basestring  # what json writes a str as, ensure_ascii=False
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.domain.usage import Usage, UsageRecord

TOPIC = get_topic(UsageRecord.Recorded)
_HEAD = '{"timestamp":{"_type_":"datetime_iso","_data_":'
_ORIGIN = ',"originator_topic":' + encode_basestring(UsageRecord.TOPIC) + ',"user_id":'


def usage_row(mapper: Any, usage: Usage, timestamp: datetime) -> StoredEvent:
    """The row of the record's one event, made at `timestamp`. Falls back on the
    mapper for what the direct writing does not know (a value of another type)."""
    if not (
        type(usage.quantity) is int
        and type(usage.occurred_at) is int
        and type(usage.user_id) is str
        and type(usage.metric) is str
        and type(usage.idempotency_key) is str
    ):
        [event] = usage.new_events()
        return mapper.to_stored_event(event)
    state = (
        f"{_HEAD}{encode_basestring(timestamp.isoformat())}}}{_ORIGIN}"
        f'{encode_basestring(usage.user_id)},"metric":{encode_basestring(usage.metric)},'
        f'"quantity":{usage.quantity},'
        f'"idempotency_key":{encode_basestring(usage.idempotency_key)},'
        f'"occurred_at":{usage.occurred_at}}}'
    ).encode()
    if mapper.compressor:
        state = mapper.compressor.compress(state)
    if mapper.cipher:
        state = mapper.cipher.encrypt(state)
    return StoredEvent(
        originator_id=usage.aggregate_id, originator_version=1, topic=TOPIC, state=state
    )
