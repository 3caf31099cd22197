"""A delivery's receipt as its row of the log, written directly: the bytes the
library's mapper writes for the receipt's one event (`Receipt.Received`, as
`Delivery.new_aggregate().collect_events()` makes it), made without the
aggregate, its event object, the `vars` copy and the JSON encoder. On the ingest
path that was a tenth of the API's CPU a delivery.
tests/unit/test_receipt_rows.py holds it to the mapper's output, byte for byte."""

from __future__ import annotations

from json.encoder import encode_basestring  # what json writes a str as, ensure_ascii=False

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.domain.receipt import Delivery, Receipt, Source
from ledger.store.library import LeanMapper

TOPIC = get_topic(Receipt.Received)
_ORIGIN = ',"originator_topic":' + encode_basestring(Receipt.TOPIC) + ',"stripe_event_id":'
_TAIL = f',"class_version":{Receipt.Received.class_version}}}'


def _optional(value: int | str | None) -> str:
    if value is None:
        return "null"
    return encode_basestring(value) if type(value) is str else str(value)


class ReceiptRows:
    """Rows of receipts made at one `timestamp` (one call of
    `Ledger.stored_events`, one group of deliveries)."""

    def __init__(self, mapper: LeanMapper, timestamp: str) -> None:
        """`timestamp`: the rows' time as their JSON begins (`timestamp_json`)."""
        self._mapper = mapper
        self._head = timestamp + _ORIGIN

    def row(self, delivery: Delivery) -> StoredEvent:
        """The row of the receipt's one event. Falls back on the mapper for what
        the direct writing does not know (a value of another type)."""
        d = delivery
        if not (
            type(d.stripe_event_id) is str
            and type(d.event_type) is str
            and type(d.stripe_created) is int
            and type(d.api_version) in (str, type(None))
            and type(d.livemode) is bool
            and type(d.payload) is str
            and type(d.signature_time) in (int, type(None))
            and type(d.source) is Source
        ):
            [event] = d.new_aggregate().collect_events()
            return self._mapper.to_stored_event(event)
        state = (
            f"{self._head}{encode_basestring(d.stripe_event_id)},"
            f'"event_type":{encode_basestring(d.event_type)},'
            f'"stripe_created":{d.stripe_created},"api_version":{_optional(d.api_version)},'
            f'"livemode":{"true" if d.livemode else "false"},'
            f'"payload":{encode_basestring(d.payload)},'
            f'"source":{encode_basestring(d.source.value)},'
            f'"signature_time":{_optional(d.signature_time)}{_TAIL}'
        )
        return self._mapper.stored_json(d.aggregate_id, TOPIC, state)
