"""Stage one's writes on PostgreSQL from the event loop: a batch of new aggregates'
stored events inserted with psycopg's async connection, in one round trip
(pipeline: lock, insert, commit), idempotent on each row's (originator id,
version): rows already in the log are skipped, and the answer says which went in.
New customers' data-subject keys go the same way first (`store_keys`).

The table, its lock and its notification channel are the `eventsourcing`
library's own (read from its recorder through `ledger.store.library`), so what is
written here is exactly what the library would have written, in the same order
of notification ids as its own inserts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from ledger.store.keys import READ_ALL, UPSERT_ALL
from ledger.store.library import datastore_of, events_table_name, lock_and_notify_statements


class AsyncEventWriter:
    """One async connection, opened on first use and again after a failure."""

    def __init__(self, recorder: Any, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._prelude = lock_and_notify_statements(recorder)
        # Answers the ids of which no row went in (mostly none), not the 1,000 that
        # did: reading those back was a tenth of a usage batch's time.
        self._insert = SQL(
            "WITH new AS (INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%(ids)b::uuid[], %(versions)b::int[], %(topics)b::text[], "
            "%(states)b::bytea[]) ON CONFLICT DO NOTHING RETURNING originator_id) "
            "SELECT id FROM unnest(%(ids)b::uuid[]) AS given(id) "
            "EXCEPT SELECT originator_id FROM new"
        ).format(
            schema=Identifier(datastore_of(recorder).schema),
            table=Identifier(events_table_name(recorder)),
        )

    async def insert_new(self, events: Sequence[StoredEvent]) -> set[UUID]:
        """Insert in one transaction what is not in the log yet; returns the
        originator ids of which no row was inserted (already in the log). Raises
        psycopg.Error (and then the connection is dropped, to be opened again by
        the next call)."""
        try:
            conn = await self._connection()
            async with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
                for statement in self._prelude:
                    await cur.execute(statement)
                await cur.execute(
                    self._insert,
                    {
                        "ids": [e.originator_id for e in events],
                        "versions": [e.originator_version for e in events],
                        "topics": [e.topic for e in events],
                        "states": [e.state for e in events],
                    },
                )
                rows = await cur.fetchall()
            return {row[0] for row in rows}
        except (psycopg.Error, asyncio.CancelledError):
            await self.close()
            raise

    async def store_keys(self, offered: Mapping[str, str]) -> dict[str, str]:
        """Store new data-subject keys (a subject that has one keeps it) and
        answer the key each of these subjects has now: one round trip. The read
        sees a key another process committed first: the insert waited for it."""
        subjects = list(offered)
        try:
            conn = await self._connection()
            async with conn.pipeline(), conn.cursor() as cur:
                await cur.execute(UPSERT_ALL, (subjects, list(offered.values())))
                await cur.execute(READ_ALL, (subjects,))
                rows = await cur.fetchall()
            return dict(rows)
        except (psycopg.Error, asyncio.CancelledError):
            await self.close()
            raise

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            self._conn.prepare_threshold = 0  # the same few statements, every group
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
