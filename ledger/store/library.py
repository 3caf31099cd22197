"""Every use of what our libraries do not promise, in one place: the `eventsourcing`
library's protected members and undocumented recorder attributes, and functools'
`singledispatchmethod.dispatcher`. tests/unit/test_library_contract.py fails when
an upgrade changes any of them; pyproject.toml pins the versions they were read in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import singledispatchmethod
from json.encoder import encode_basestring  # what json writes a str as, ensure_ascii=False
from typing import TYPE_CHECKING, Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import resolve_topic

if TYPE_CHECKING:  # the ledger on SQLite never loads the PostgreSQL modules
    from eventsourcing.application import ProcessingEvent
    from eventsourcing.persistence import Recording, StoredEvent, Tracking
    from eventsourcing.postgres import PostgresAggregateRecorder
    from eventsourcing.projection import EventSourcedProjection
    from psycopg.sql import Composed


def record_and_notify(
    app: EventSourcedProjection[Any], processing: ProcessingEvent[Any]
) -> list[Recording[Any]]:
    """Record a processing event (its events and its tracking position in one
    transaction) and tell the followers, as the library's `process_event` does for
    one event; for a caller that collected a batch in one. (`process_event` also
    takes snapshots: the ledger takes none.) The caller holds `processing_lock`."""
    recordings = app._record(processing)
    app._notify(recordings)
    return recordings


def collect(processing: ProcessingEvent[Any], aggregates: Iterable[Any]) -> None:
    """`processing.collect_events(*aggregates)` for aggregates only, without its two
    checks against runtime protocols per object (a tenth of stage two's time): their
    pending events onto `processing.events`, each aggregate into
    `processing.aggregates` by id."""
    events, by_id = processing.events, processing.aggregates
    for aggregate in aggregates:
        events.extend(aggregate.collect_events())
        by_id[aggregate.id] = aggregate


def insert_tracking(recorder: Any, cursor: Any, tracking: Tracking) -> None:
    """Write a tracking position inside the caller's transaction on the recorder's
    datastore (`insert_tracking` opens a transaction of its own). Raises
    IntegrityError unless it moves the name's position forward."""
    recorder._insert_tracking(cursor, tracking)


def insert_trackings(recorder: Any, cursor: Any, trackings: list[Tracking]) -> None:
    """`insert_tracking` for several names at once. On PostgreSQL with the
    library's single-row tracking, one statement (its own upsert, for every row,
    in name order so that two writers lock alike) in place of one round trip
    each; raises IntegrityError unless it moves every name's position forward."""
    from eventsourcing.persistence import IntegrityError

    if not trackings:
        return
    datastore = recorder.datastore
    if getattr(recorder, "tracking_table_name", None) is None or not getattr(
        datastore, "single_row_tracking", False
    ):
        for tracking in trackings:
            insert_tracking(recorder, cursor, tracking)
        return
    ordered = sorted(trackings, key=lambda t: t.application_name)
    table = tracking_table(recorder)
    cursor.execute(
        f"INSERT INTO {table} (application_name, notification_id) "  # noqa: S608 - our names
        "SELECT * FROM unnest(%(names)s::text[], %(ids)s::bigint[]) "
        "ON CONFLICT (application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id "
        f"WHERE {table}.notification_id < EXCLUDED.notification_id RETURNING application_name",
        {
            "names": [t.application_name for t in ordered],
            "ids": [t.notification_id for t in ordered],
        },
    )
    moved = {row["application_name"] for row in cursor.fetchall()}
    missing = [t.application_name for t in ordered if t.application_name not in moved]
    if missing:
        raise IntegrityError(f"Failed to record tracking for {', '.join(missing)}")


def datastore_of(recorder: Any) -> Any:
    """An SQLite or PostgreSQL recorder's datastore: its `transaction(commit=...)`
    and, on PostgreSQL, `get_connection()` and `schema`."""
    return recorder.datastore


def events_table_name(recorder: Any) -> str:
    """The table an SQLite or PostgreSQL recorder stores events in."""
    return str(recorder.events_table_name)


def moved_channel(recorder: Any) -> str:
    """The channel a batch applied by the projections NOTIFYs, named after the
    tracking table their positions are kept in."""
    return f"{getattr(recorder, 'tracking_table_name', 'tracking')}_moved"


def tracking_table(recorder: Any) -> str:
    """The table a tracking recorder keeps its positions in, as SQL (PostgreSQL:
    schema-qualified; SQLite: always `tracking`)."""
    name = getattr(recorder, "tracking_table_name", None)
    if name is None:
        return "tracking"
    return f'"{recorder.datastore.schema}"."{name}"'


def stored_event_type_name(recorder: PostgresAggregateRecorder) -> str:
    """The PostgreSQL composite type of one stored event (an array of them is what
    the insert statement takes)."""
    return recorder.stored_event_type_name


def set_insert_events_statement(recorder: PostgresAggregateRecorder, statement: Composed) -> None:
    """Replace the statement the recorder inserts a batch of events with: it is
    given one parameter, the array of stored-event composites, and must answer
    the rows' notification ids (the library adds ``RETURNING notification_id``
    to its own)."""
    recorder.insert_events_statement = statement


def handler_types(method: singledispatchmethod[Any]) -> list[type]:
    """The types a `singledispatchmethod` has handlers registered for, besides
    `object` (its `dispatcher` attribute is not documented)."""
    return [t for t in method.dispatcher.registry if t is not object]


def log_channel(recorder: Any) -> str:
    """The channel the library's PostgreSQL recorder NOTIFYs on every insert of events."""
    return str(recorder.channel_name)


def lock_and_notify_statements(recorder: Any) -> list[Composed]:
    """What the library's PostgreSQL recorder runs before inserting events: its
    lock timeout, the EXCLUSIVE lock on the events table (so that notification ids
    are committed in the order they are issued) and the NOTIFY of its channel."""
    from psycopg.sql import SQL, Identifier

    notify = SQL("NOTIFY {0}").format(Identifier(log_channel(recorder)))
    return [*recorder.lock_table_statements, notify]


def handler_for(method: singledispatchmethod[Any], cls: type) -> Any:
    """The function a `singledispatchmethod` dispatches `cls` to, to be called with
    the instance as first argument (a loop over a million events resolves each
    type once instead of binding the method per call)."""
    return method.dispatcher.dispatch(cls)


class LeanMapper(Mapper[Any]):
    """The library's mapper; its `to_domain_event` makes the same event, with what
    the library's looks up for every event (the class of its topic, the class's
    version, how its id is converted) looked up once a topic and id type: a
    projection or a rebuild decodes millions of events of a few dozen types. The
    steps after decoding are the library's (`Mapper.to_domain_event`): the id
    and version set, `class_version` upcast, the event made without `__init__`.
    Its state is decoded by `json_decoder`. A mapper with a cipher or a
    compressor, and an event that fails to decode, go through the library's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kinds: dict[tuple[str, type], tuple[type, int, Any]] = {}
        self._decode = json_decoder(self.transcoder)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        if self.cipher or self.compressor:
            return super().to_domain_event(stored_event)
        originator_id = stored_event.originator_id
        key = (stored_event.topic, type(originator_id))
        kind = self._kinds.get(key)
        if kind is None:
            cls = resolve_topic(stored_event.topic)
            version = getattr(cls, "class_version", 1)
            kind = self._kinds[key] = (cls, version, find_id_convertor(cls, key[1]))
        cls, version, convert = kind
        try:
            state = self._decode(stored_event.state)
        except Exception:  # the library's error, with the event named
            return super().to_domain_event(stored_event)
        state["originator_id"] = convert(originator_id)
        state["originator_version"] = stored_event.originator_version
        from_version = state.pop("class_version", 1)
        while from_version < version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def stored_json(self, originator_id: Any, topic: str, state: str) -> StoredEvent:
        """The row of a first event whose state, as the transcoder writes it, is the
        JSON text `state` (the rows stage one writes directly: `ReceiptRows`,
        `UsageRows`), compressed and encrypted as `to_stored_event` does."""
        data = state.encode()
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(originator_id, 1, topic, data)


class _Float(ValueError):
    """A number orjson parsed as a float: the library's parser decides what it is."""


def json_decoder(transcoder: Any) -> Any:
    """What the library's `JSONTranscoder.decode` answers, from orjson's parse (half
    the time): each object of two keys `_type_` and `_data_` replaced by what its
    registered transcoding decodes, innermost first, as the library's
    `_decode_obj` hook does. What orjson refuses and the standard parser takes
    (NaN, lone surrogates) raises here, and so does any number orjson made a float:
    it makes one of an integer past 64 bits too, where the standard parser keeps
    the integer (the ledger's events hold no floats but a failed receipt's retry
    time). `LeanMapper` then goes through the library's mapper. Any other
    transcoder decodes as itself."""
    if type(transcoder) is not JSONTranscoder:
        return transcoder.decode
    names, loads = transcoder.names, orjson.loads
    nested = frozenset((dict, list, float))

    def restore(value: Any) -> Any:
        kind = type(value)
        if kind is float:
            raise _Float
        if kind is dict or kind is list:
            for key, item in value.items() if kind is dict else enumerate(value):
                if type(item) in nested:
                    value[key] = restore(item)
            if kind is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
                return names[value["_type_"]].decode(value["_data_"])  # KeyError: unknown
        return value

    return lambda data: restore(loads(data))


def timestamp_json(timestamp: datetime) -> str:
    """An event's state as the transcoder writes it, up to its timestamp (the
    first of its fields)."""
    return (
        '{"timestamp":{"_type_":"datetime_iso","_data_":'
        + encode_basestring(timestamp.isoformat())
        + "}"
    )
