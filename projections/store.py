"""Where projections live: tables beside the log (on PostgreSQL in the same
database, on SQLite in a file next to it), each projection's position kept by
the `eventsourcing` library's tracking recorder in the same transaction as its
rows. Every projection writes into a *generation* of its tables, read through
views; a rebuild fills the next generation and swaps the views at the end."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import (
    InfrastructureFactory,
    OperationalError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment
from psycopg.conninfo import make_conninfo

from ledger.store.library import datastore_of, insert_trackings, moved_channel, tracking_table
from ledger.store.url import Store

_PLACEHOLDER = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")

GENERATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS projection_generations "
    "(name TEXT PRIMARY KEY, generation INTEGER NOT NULL)"
)


class ViewStore:
    def __init__(
        self, database_url: str | None = None, *, memory: bool = False, pool_size: int = 8
    ) -> None:
        self._memory = memory
        self._url = database_url or ""
        self._local = threading.local()
        self._sqlite_path = ""
        self._readers: list[sqlite3.Connection] = []
        if memory:  # an "as of" replay: the same projections, folded into a scratch store
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": f"file:asof-{uuid4().hex}?mode=memory&cache=shared",
            }
            self.is_postgres = False
        else:
            store = Store(database_url or "")
            self.is_postgres = store.is_postgres
            if self.is_postgres:
                env = store.env(pool_size=pool_size)
            else:
                self._sqlite_path = str(store.sibling_sqlite("projections"))
                env = store.env(sqlite_path=Path(self._sqlite_path))
        env["CREATE_TABLE"] = "y"
        self.factory = InfrastructureFactory.construct(Environment("projections", env))
        self.tracking: TrackingRecorder = self.factory.tracking_recorder()
        table = tracking_table(self.tracking)  # there from the start (CREATE_TABLE)
        self._lock_first = f"UPDATE {table} SET notification_id = notification_id WHERE 0"
        self._sql: dict[str, str] = {}
        with self.transaction(pipeline=False) as c:
            c.execute(GENERATIONS_DDL)

    @property
    def moved_channel(self) -> str:
        """PostgreSQL: what every batch the projections apply NOTIFYs at its commit."""
        return moved_channel(self.tracking)

    @property
    def conninfo(self) -> str:
        """PostgreSQL connection string of this store (for an async read pool)."""
        env = Store(self._url).env()
        parts = {
            "dbname": env["POSTGRES_DBNAME"],
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
            "connect_timeout": "5",
        }
        if "POSTGRES_SCHEMA" in env:
            parts["options"] = f"-c search_path={env['POSTGRES_SCHEMA']}"
        return make_conninfo(**{k: v for k, v in parts.items() if v})

    def close(self) -> None:
        for conn in self._readers:
            conn.close()
        self.factory.close()

    def sql(self, statement: str) -> str:
        """Our statements use :name placeholders; psycopg wants %(name)s."""
        if not self.is_postgres:
            return statement
        adapted = self._sql.get(statement)
        if adapted is None:
            adapted = self._sql[statement] = _PLACEHOLDER.sub(r"%(\1)s", statement)
        return adapted

    @contextmanager
    def transaction(self, *, commit: bool = True, pipeline: bool = True) -> Iterator[Cursor]:
        """On PostgreSQL, statements go in a pipeline and are prepared on first use:
        parsing and planning each anew cost the server more than the projections'
        own work (450 -> 200 us of server CPU a delivery). A batch that fails
        part-way (another runner wrote first) leaves none believed prepared that
        is not (tests/integration/test_projections.py holds psycopg to it).

        `pipeline=False`: plain statements, none prepared. For a schema change
        (CREATE, DROP): after one in a pipeline, psycopg sends the DEALLOCATE ALL
        it calls for only after the next transaction's first statement is
        prepared, and that statement is then gone from the server while psycopg
        believes in it. And for `COPY`, which cannot run in a pipeline.

        On SQLite such a transaction takes the store's write lock before anything
        else (waiting for another writer: the busy timeout). One that reads first
        (a `DROP ... IF EXISTS` of nothing, a generation looked up) and writes after
        fails at once with "database is locked" when another connection wrote in
        between (WAL's stale snapshot): two rebuild processes of an empty log did.
        A statement that changes no row still takes the lock."""
        with datastore_of(self.tracking).transaction(commit=commit) as cursor:
            if not self.is_postgres and not pipeline and commit:
                cursor.execute(self._lock_first)
            if self.is_postgres and not pipeline:
                cursor.connection.prepare_threshold = None
                yield Cursor(self, cursor)
            elif self.is_postgres:
                cursor.connection.prepare_threshold = 0
                with cursor.connection.pipeline():
                    yield Cursor(self, cursor)
            else:
                yield Cursor(self, cursor)

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """For the API's reads: no transaction bookkeeping. On SQLite each thread
        keeps a connection of its own (readers never wait on the writer in WAL
        mode); on PostgreSQL a connection from the pool, in autocommit: each
        statement is one round trip, and sees what was committed when it began (as
        it would inside a READ COMMITTED transaction, without its BEGIN and
        ROLLBACK: a trivial read took seven waits on the server, now one)."""
        if self.is_postgres:
            with datastore_of(self.tracking).get_connection() as conn:
                conn.prepare_threshold = None  # see transaction()
                assert conn.autocommit  # the library's pool configures its connections so
                with conn.cursor() as cursor:
                    yield Cursor(self, cursor)
            return
        if self._memory:
            with self.transaction(commit=False) as cursor:
                yield cursor
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(
                self._sqlite_path, check_same_thread=False, isolation_level=None
            )
            conn.row_factory = sqlite3.Row
            self._readers.append(conn)
        try:
            yield Cursor(self, conn.cursor())
        except sqlite3.Error as exc:  # as the library reports its own store's failures
            raise OperationalError(str(exc)) from exc

    def record_position(self, cursor: Cursor, key: str, position: int) -> None:
        self.record_positions(cursor, {key: position})

    def record_positions(self, cursor: Cursor, positions: Mapping[str, int]) -> None:
        """Several keys' positions, in one statement on PostgreSQL. Raises
        IntegrityError unless it moves every position forward: two runners of one
        projection can never both apply the same events."""
        trackings = [Tracking(key, position) for key, position in positions.items()]
        insert_trackings(self.tracking, cursor.raw, trackings)

    def index_names(self, c: Cursor) -> set[str]:
        catalog = (
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema()"
            if self.is_postgres
            else "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
        return {row["name"] for row in c.query(catalog)}

    def position(self, key: str) -> int:
        return self.tracking.max_tracking_id(key) or 0

    def positions(self, keys: Sequence[str]) -> dict[str, int]:
        """Several tracking positions in one query (a key never written is absent)."""
        if not keys:
            return {}
        names = {f"k{i}": key for i, key in enumerate(keys)}
        listed = ", ".join(f":{name}" for name in names)
        with self.reading() as c:
            rows = c.query(
                "SELECT application_name AS key, MAX(notification_id) AS position "
                f"FROM {tracking_table(self.tracking)} WHERE application_name IN ({listed}) "
                "GROUP BY application_name",
                names,
            )
        return {r["key"]: r["position"] for r in rows}

    def generations(self) -> dict[str, int]:
        with self.reading() as c:
            return published_generations(c)


class Cursor:
    def __init__(self, store: ViewStore, raw: Any) -> None:
        self.store = store
        self.raw = raw

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        self.raw.execute(self.store.sql(statement), params or {})

    def execute_many(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.raw.executemany(self.store.sql(statement), rows)

    def query(
        self, statement: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self.raw.execute(self.store.sql(statement), params or {})
        return [dict(row) for row in self.raw.fetchall()]


def published_generations(c: Cursor) -> dict[str, int]:
    """Every projection's published generation, in one read."""
    return {
        r["name"]: r["generation"]
        for r in c.query("SELECT name, generation FROM projection_generations")
    }
