"""The log's recorders: the `eventsourcing` library's, with these additions.

`existing(ids)`: which of some aggregates have events, in one query. Stage two
asks it once per batch for the aggregates its receipts name, instead of one
lookup each for the many that are new.

`topic_counts()`: how many events of each topic the log holds, for sharing a
rebuild's work out between processes.

`read_notifications(start, limit, stop, topics)`: a window of the log as stage
two, the projections and a rebuild read it, on PostgreSQL in binary, as tuples.

`notifications_of(ids, after, limit)`: the events of some aggregates with their
log positions, in log order, through the (originator id, version) key: what the
audit's "one user" reads ask, at a cost that grows with the user, not the log.

On PostgreSQL, inserts are sent in binary. The library's recorder passes the
batch of stored events as text: psycopg hex-encodes every event's bytes and
escapes the whole array, and for receipts of a few kilobytes that CPU was what
limited the group committer. Binary (`%b`) sends the same bytes as they are,
byte for byte the same rows (BENCHMARKS.md has the figures).

On PostgreSQL 14 and later, the log's `state` column is compressed with lz4
instead of the default pglz (`create_table`, also on a log made before): a
receipt of a few kilobytes is compressed as it is stored, and pglz took a third
of the server's CPU of an ingest. Rows already stored keep their compression.

What they rely on of the library's recorders goes through `ledger.store.library`."""

from __future__ import annotations

import logging
from collections.abc import Collection
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from eventsourcing.utils import retry
from psycopg.errors import FeatureNotSupported
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.store.library import (
    datastore_of,
    events_table_name,
    set_insert_events_statement,
    stored_event_type_name,
)


class LogRow(NamedTuple):
    """A notification as `read_notifications` answers it: what the mapper and a
    rebuild read of one (`Notification`'s attributes), as a plain tuple."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


log = logging.getLogger("ledger")
_LAST = 2**63 - 1  # the largest position PostgreSQL's BIGINT holds


def _log_rows(cursor: Any) -> Any:
    """psycopg's row maker for `LogRow`s (the statement's columns in its order):
    the tuple made in C, not by `_make`, a Python call a row that checks a length
    the statement fixes."""
    return _new_log_row


_new_log_row = partial(tuple.__new__, LogRow)


class BinaryProcessRecorder(PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = {
            "schema": Identifier(datastore_of(self).schema),
            "table": Identifier(events_table_name(self)),
        }
        binary_insert = SQL(
            "    INSERT INTO {schema}.{table} AS t ("
            "    originator_id, originator_version, topic, state)"
            "    SELECT originator_id, originator_version, topic, state"
            "    FROM unnest(%b::{schema}.{stored_event_type}[])"
            " RETURNING notification_id"
        ).format(stored_event_type=Identifier(stored_event_type_name(self)), **names)
        set_insert_events_statement(self, binary_insert)
        # One probe of the key a id, stopping at its first event (DISTINCT over
        # ANY read every event of each: 4-8 -> 2.5-3.5 ms for 1,000 ids).
        self._existing_statement = SQL(
            "SELECT o AS originator_id FROM unnest(%s::uuid[]) AS o "
            "WHERE EXISTS (SELECT FROM {schema}.{table} WHERE originator_id = o)"
        ).format(**names)
        # Materialized: the rows are found through the (originator id, version) key
        # first. Left to itself, the planner may walk the notification id index of
        # the whole log for the ORDER BY and LIMIT, filtering as it goes.
        self._of_statement = SQL(
            "WITH theirs AS MATERIALIZED (SELECT notification_id, originator_id, "
            "originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s)) "
            "SELECT * FROM theirs WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(**names)

        self._counts_statement = SQL(
            "SELECT topic, count(*) FROM {schema}.{table} GROUP BY topic"
        ).format(**names)
        self._compression_statement = SQL(
            "SELECT a.attcompression FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attname = 'state'"
        )
        self._lz4_statement = SQL(
            "ALTER TABLE {schema}.{table} ALTER COLUMN state SET COMPRESSION lz4"
        ).format(**names)
        read = (
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {schema}.{table} WHERE notification_id BETWEEN %s AND %s {topics}"
            "ORDER BY notification_id LIMIT %s"
        )
        self._read_statement = SQL(read).format(topics=SQL("AND topic = ANY(%s) "), **names)
        self._read_all_statement = SQL(read).format(topics=SQL(""), **names)

    def create_table(self) -> None:
        super().create_table()
        self._compress_with_lz4()

    def _compress_with_lz4(self) -> None:
        """The log's `state` compressed with lz4 from now on (a change of the
        column's settings, not of its rows; skipped when already so, so that a
        start takes no lock on a log in use)."""
        datastore = datastore_of(self)
        with datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            if conn.info.server_version < 140000:  # no per-column compression before 14
                return
            curs.execute(self._compression_statement, (datastore.schema, events_table_name(self)))
            found = curs.fetchone()
            if found is None or found[0] == "l":
                return
            try:
                with conn.transaction():
                    curs.execute(self._lz4_statement)
            except FeatureNotSupported:  # a server built without lz4
                log.info("this PostgreSQL has no lz4: the log stays compressed with pglz")

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def read_notifications(
        self, start: int, limit: int, stop: int | None, topics: Collection[str] | None
    ) -> list[LogRow]:
        """`select_notifications` of some topics (None: all) from `start` to `stop`
        (None: the head), for every read of the log that is decoded or sealed: the
        rows in binary, each as a `LogRow` tuple. The library's reads come as text,
        hex-decoded, through a dict and a frozen dataclass per row: 4.9 us a row
        against 1.4 here."""
        with (
            datastore_of(self).get_connection() as conn,
            conn.cursor(binary=True, row_factory=_log_rows) as curs,
        ):
            bounds = (start, _LAST if stop is None else stop)
            if topics is None:
                curs.execute(self._read_all_statement, (*bounds, limit))
            else:
                curs.execute(self._read_statement, (*bounds, list(topics), limit))
            return curs.fetchall()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def topic_counts(self) -> dict[str, int]:
        with datastore_of(self).get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(self._counts_statement)
            return dict(c.fetchall())

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def existing(self, ids: Collection[UUID]) -> set[UUID]:
        if not ids:
            return set()
        with datastore_of(self).transaction(commit=False) as curs:
            curs.execute(self._existing_statement, (list(ids),))
            return {row["originator_id"] for row in curs.fetchall()}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def notifications_of(
        self, ids: Collection[UUID], after: int = 0, limit: int = 1_000_000
    ) -> list[Notification]:
        if not ids:
            return []
        with datastore_of(self).transaction(commit=False) as curs:
            curs.execute(self._of_statement, (list(ids), after, limit))
            return [
                _notification(row, row["notification_id"], row["originator_id"])
                for row in curs.fetchall()
            ]


class SQLiteLedgerRecorder(SQLiteProcessRecorder):
    def read_notifications(
        self, start: int, limit: int, stop: int | None, topics: Collection[str] | None
    ) -> list[Notification]:
        if topics is not None and not topics:  # none, as on PostgreSQL (the library: all)
            return []
        return self.select_notifications(
            start=start, limit=limit, stop=stop, topics=list(topics or ())
        )

    def topic_counts(self) -> dict[str, int]:
        statement = f"SELECT topic, count(*) FROM {events_table_name(self)} GROUP BY topic"  # noqa: S608
        with datastore_of(self).transaction(commit=False) as c:
            c.execute(statement)
            return {row[0]: row[1] for row in c.fetchall()}

    def existing(self, ids: Collection[UUID]) -> set[UUID]:
        if not ids:
            return set()
        # the library's own table name, and one placeholder per id: no input in the text
        statement = (
            f"SELECT DISTINCT originator_id FROM {events_table_name(self)} "  # noqa: S608
            f"WHERE originator_id IN ({','.join('?' * len(ids))})"
        )
        with datastore_of(self).transaction(commit=False) as c:
            c.execute(statement, [i.hex for i in ids])
            return {UUID(row["originator_id"]) for row in c.fetchall()}

    def notifications_of(
        self, ids: Collection[UUID], after: int = 0, limit: int = 1_000_000
    ) -> list[Notification]:
        if not ids:
            return []
        statement = (
            "SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {events_table_name(self)} "
            f"WHERE originator_id IN ({','.join('?' * len(ids))}) AND rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        with datastore_of(self).transaction(commit=False) as c:
            c.execute(statement, [*(i.hex for i in ids), after, limit])
            return [
                _notification(row, row["rowid"], UUID(row["originator_id"])) for row in c.fetchall()
            ]


def _notification(row: Any, position: int, originator_id: UUID) -> Notification:
    return Notification(
        id=position,
        originator_id=originator_id,
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
