"""Rebuild of projections in one pass over the log.

Every projection being rebuilt is fed from one read of the log (each event read
and decoded once, handed to each projection whose topics it has, a window of
the log at a time, through its `apply_all` as the live runner hands it a batch),
folded with the projections' own handlers into a scratch SQLite file (no transaction or
tracking per event; a bounded page cache, so memory stays flat as the log
grows). Each finished generation is then written to the store in one
transaction with its tracking position (PostgreSQL: `COPY`), caught up with
what the log gained meanwhile through the live path (exactly-once tracking as
ever), and only then published: readers never see a half-built generation."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger import collector
from projections.base import SqlProjection, Writer
from projections.runner import Catchup, Progress
from projections.store import Cursor

log = logging.getLogger("projections")
COPY_ROWS = 5000  # rows per INSERT batch on SQLite


class _ScratchCursor:
    """What `Writer` needs of a cursor, on the scratch file (SQLite's :name style):
    `execute` (and `execute_many`) is one cursor's own (no call in between, per
    statement), `query` answers rows as dicts (handlers that read their own tables,
    e.g. usage_totals)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn
        writes = conn.cursor()  # `Connection.execute` makes a cursor a call
        self.execute = writes.execute
        self.execute_many = writes.executemany

    def query(
        self, statement: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return [dict(r) for r in self.raw.execute(statement, params or {})]


@contextmanager
def scratch() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="ledger-rebuild-") as folder:
        conn = sqlite3.connect(Path(folder) / "fold.db", isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -131072"):
            conn.execute(f"PRAGMA {pragma}")  # 128 MiB of pages at most
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.close()


def rebuild_all(
    catchup: Catchup,
    projections: Sequence[SqlProjection],
    *,
    batch_size: int = 10_000,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Rebuild `projections` from position 0 into fresh generations and swap each
    in when done. Returns, per projection, the events it applied."""
    ledger, store = catchup.ledger, projections[0].view
    head = catchup.head()
    plan = {p.name: _next_generation(catchup, p) for p in projections}
    applied = dict.fromkeys(plan, 0)
    started = time.monotonic()
    with scratch() as conn:
        writers = {}
        for p in projections:
            cursor = _ScratchCursor(conn)
            # keyed tables stored in key order: read out in it, their rows reach the
            # store's primary key in order too (appended to it, not scattered)
            p.create_generation(cursor, plan[p.name], clustered=True)  # type: ignore[arg-type]
            # the handlers' statements straight to the connection: it takes :name too
            writers[p.name] = Writer(cursor, p.names(plan[p.name]))  # type: ignore[arg-type]
        # each projection's share of a window, and the shares each topic goes to
        shares: dict[str, list[tuple[int, Any]]] = {p.name: [] for p in projections}
        routes: dict[str, list[list[tuple[int, Any]]]] = {}
        for p in projections:
            for topic in p.topics:
                routes.setdefault(topic, []).append(shares[p.name])
        mapper, topics = ledger.mapper, sorted(routes)

        def window(start: int) -> list[Any]:
            # A window of positions, not "from here to the head, LIMIT n": PostgreSQL
            # would scan to the head for every batch (a quadratic read of the log).
            stop = min(head, start + batch_size - 1)
            recorder: Any = ledger.recorder
            return recorder.read_notifications(start, batch_size, stop, topics)  # type: ignore[no-any-return]

        position = 0
        with (
            collector.frozen(),
            ThreadPoolExecutor(1, thread_name_prefix="rebuild-read") as reader,
        ):
            ahead = reader.submit(window, 1) if head else None
            while ahead is not None:
                notifications, stop = ahead.result(), min(head, position + batch_size)
                # the next window is read (psycopg waits without the GIL) while this one folds
                ahead = reader.submit(window, stop + 1) if stop < head else None
                _share(notifications, routes, mapper)
                for p in projections:  # each its share at once, as the live runner does
                    events, w = shares[p.name], writers[p.name]
                    w.memo = {}  # its notes are a batch's
                    p.apply_all(events, w)
                    w.flush()
                    applied[p.name] += len(events)
                    events.clear()
                position = stop
                if progress:
                    progress(len(notifications), position)
        conn.execute("COMMIT")
        folded = time.monotonic()
        for p in projections:
            _write_generation(store, conn, p, plan[p.name], head)
    written = time.monotonic()
    for p in projections:
        applied[p.name] += catchup.catch_up(p, plan[p.name])  # what came in meanwhile
        old = catchup.generation(p)
        with store.transaction(pipeline=False) as c:  # a schema change
            p.publish_generation(c, plan[p.name])
            p.drop_generation(c, old)
    log.info(
        "rebuilt %s over %d log events: folded in %.1f s, written in %.1f s, swapped in",
        ", ".join(plan),
        head,
        folded - started,
        written - folded,
    )
    return applied


def _share(
    notifications: Sequence[Any],
    routes: Mapping[str, list[list[tuple[int, Any]]]],
    mapper: Any,
) -> None:
    """Each event decoded once, added (with its position) to the share of every
    projection that has its topic."""
    decode = mapper.to_domain_event
    for n in notifications:
        event = decode(n)
        for share in routes[n.topic]:
            share.append((n.id, event))


def rebuild(
    catchup: Catchup,
    projection: SqlProjection,
    batch_size: int = 10_000,
    progress: Progress | None = None,
) -> int:
    """Rebuild one projection (see `rebuild_all`); returns the events it applied."""
    return rebuild_all(catchup, [projection], batch_size=batch_size, progress=progress)[
        projection.name
    ]


def share(
    projections: Sequence[SqlProjection], topic_counts: Mapping[str, int], jobs: int
) -> list[list[SqlProjection]]:
    """The projections in at most `jobs` groups of about as much work each (the
    log's events of their topics, times their `rebuild_cost`), for a rebuild of
    each group in a process of its own: the heaviest first, each to the lightest
    group so far. Groups keep the projections' order; none is empty."""
    weight = {
        p.name: p.rebuild_cost * sum(topic_counts.get(t, 0) for t in p.topics) for p in projections
    }
    loads = [0.0] * max(1, min(jobs, len(projections)))
    assigned: dict[str, int] = {}
    for p in sorted(projections, key=lambda p: -weight[p.name]):
        lightest = loads.index(min(loads))
        assigned[p.name] = lightest
        loads[lightest] += weight[p.name] + 1  # an empty projection still costs a little
    groups = [[p for p in projections if assigned[p.name] == g] for g in range(len(loads))]
    return [g for g in groups if g]


def _next_generation(catchup: Catchup, projection: SqlProjection) -> int:
    """Past the live one and past leftovers of an interrupted rebuild (each has a
    tracking key of its own)."""
    store = projection.view
    generation = max(catchup.generation(projection), store.generations().get(projection.name, 0))
    while store.position(projection.tracking_key(generation + 1)):
        generation += 1
    return generation + 1


def _write_generation(
    store: Any, conn: sqlite3.Connection, projection: SqlProjection, generation: int, head: int
) -> None:
    """The folded tables into the store, with the generation's tracking position,
    in one transaction; indexes after the rows."""
    names = projection.names(generation)
    with store.transaction(pipeline=False) as c:
        if head:
            store.record_position(c, projection.tracking_key(generation), head)
        for table in projection.tables:
            c.execute(f"DROP TABLE IF EXISTS {names[table]}")
            c.execute(f"CREATE TABLE {names[table]} ({projection.tables[table]})")
        for table in projection.tables:
            _copy(conn, c, names[table], projection.column_types[table])
        projection.create_indexes(c, generation)


def _copy(scratch: sqlite3.Connection, c: Cursor, table: str, types: Mapping[str, str]) -> None:
    """A folded table's rows into the store's table of the same name (PostgreSQL:
    binary COPY, each column of its declared type: no text to make and parse; text
    COPY if a column's type is not in `types`, i.e. not one `column_types` knows)."""
    rows = scratch.cursor()
    rows.row_factory = None  # tuples
    columns = [d[0] for d in rows.execute(f"SELECT * FROM {table}").description]
    listed = ", ".join(columns)
    if c.store.is_postgres:
        kinds = [types.get(column) for column in columns]
        binary = all(kinds)
        options = " (FORMAT BINARY)" if binary else ""
        with c.raw.copy(f"COPY {table} ({listed}) FROM STDIN{options}") as copy:
            if binary:
                copy.set_types(kinds)
            for row in rows:
                copy.write_row(row)
        return
    insert = f"INSERT INTO {table} ({listed}) VALUES ({', '.join('?' * len(columns))})"
    while chunk := rows.fetchmany(COPY_ROWS):
        c.raw.executemany(insert, chunk)
