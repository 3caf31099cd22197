"""What every projection shares: its tables (in generations, read through
views), a handler per event type, `topics` derived from those handlers, and
`apply_batch`, which applies events with their tracking position."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import singledispatchmethod
from operator import itemgetter
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from ledger.domain.catalog import Catalog
from ledger.store.library import handler_for, handler_types
from projections.store import Cursor, ViewStore, published_generations

# a column's declared type -> its PostgreSQL type, as a cast (`Writer.insert_rows`) and
# binary COPY (`set_types`, the rebuild) both name it
_ARRAY_TYPES = {"TEXT": "text", "BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "float8"}


def column_types(columns: str) -> dict[str, str]:
    """Each column's PostgreSQL type, from a table's column definitions (its
    constraints, e.g. PRIMARY KEY (a, b), skipped)."""
    found = {}
    for part in re.split(r",\s*(?![^()]*\))", columns):
        name, kind, *_ = part.split()
        if kind.upper() in _ARRAY_TYPES:
            found[name] = _ARRAY_TYPES[kind.upper()]
    return found


def _array(kind: str, values: list[Any]) -> list[Any]:
    """A column's values as `insert_rows` sends them: a float8 column's all floats
    (sent in binary, an array's elements take the type of its first one)."""
    if kind == "float8":
        return [None if v is None else float(v) for v in values]
    return values


class Writer:
    """A projection's handle on its tables inside one transaction. Statements name
    tables as {table}; they are bound to the generation being written. Rows given
    to `insert_later` are written together (one statement a table: on PostgreSQL
    unnested arrays, on SQLite `executemany`) before the next statement that names
    their table, and at the batch's end."""

    def __init__(
        self,
        cursor: Cursor,
        names: Mapping[str, str],
        types: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.cursor = cursor
        self.names = names
        self.types = types or {}  # table -> column -> PostgreSQL type (`column_types`)
        self._inserts: dict[tuple[str, tuple[str, ...], str], str] = {}
        self.position = 0
        self._bound: dict[str, str] = {}
        self._places: tuple[int, dict[str, int]] = (0, {})
        self.postgres = bool(getattr(getattr(cursor, "store", None), "is_postgres", False))
        self._later: dict[str, tuple[str, list[Mapping[str, Any]]]] = {}
        self.memo: dict[str, Any] = {}  # a projection's own notes for this batch

    def _bind(self, statement: str) -> str:
        """The statement with its {table} names of this generation (bound once)."""
        bound = self._bound.get(statement)
        if bound is None:
            bound = self._bound[statement] = statement.format_map(self.names)
        return bound

    def place(self, key: str) -> int:
        """0, 1, 2 ... for each thing the event at `position` writes under `key`:
        counted here, not read back from the rows."""
        at, places = self._places
        if at != self.position:
            self._places = (self.position, places := {})
        n = places[key] = places.get(key, -1) + 1
        return n

    def execute(self, statement: str, **params: Any) -> None:
        if self._later:
            self.flush(statement)
        self.cursor.execute(self._bind(statement), params)

    def execute_many(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement for many rows of parameters (on PostgreSQL, sent at once)."""
        if self._later:
            self.flush(statement)
        if rows:
            self.cursor.execute_many(self._bind(statement), rows)

    def insert_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]], conflict: str = ""
    ) -> None:
        """Rows into {table}, each with the same columns, `conflict` after (e.g.
        "ON CONFLICT DO NOTHING"): on PostgreSQL one statement for them all (an
        array a column, of the column's type in `types`, unnested), else one
        statement run for each (`executemany`, each row's values in the columns'
        order: SQLite binds a `?` at a third less than a `:name`, which it looks
        up in the row by a string made anew each time)."""
        if not rows:
            return
        columns = tuple(rows[0])
        statement = self._insert(table, columns, conflict)
        if self.postgres:
            self.execute(statement, **self.arrays(table, columns, rows))
        else:
            values = itemgetter(*columns)
            ordered = map(values, rows) if len(columns) > 1 else ((values(r),) for r in rows)
            self.execute_many(statement, ordered)  # type: ignore[arg-type]

    def _insert(self, table: str, columns: tuple[str, ...], conflict: str) -> str:
        key = (table, columns, conflict)
        statement = self._inserts.get(key)
        if statement is None:
            if self.postgres:
                rows = f"SELECT * FROM {self.unnest(table, columns)}"
            else:
                rows = "VALUES (" + ", ".join("?" * len(columns)) + ")"
            statement = self._inserts[key] = (
                f"INSERT INTO {{{table}}} ({', '.join(columns)}) {rows} {conflict}"
            )
        return statement

    def unnest(self, table: str, columns: Sequence[str]) -> str:
        """PostgreSQL: `unnest(...)` of one array a column of {table}, each sent in
        binary as its column's type (no text to quote and parse); `arrays` gives
        the parameters."""
        types = self.types[table]
        return "unnest(" + ", ".join(f"%({c})b::{types[c]}[]" for c in columns) + ")"

    def arrays(
        self, table: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        """The parameters of `unnest`: each column's values, in the rows' order."""
        types = self.types[table]
        return {c: _array(types[c], [row[c] for row in rows]) for c in columns}

    def insert_later(self, table: str, row: Mapping[str, Any], conflict: str = "") -> None:
        """A row for `insert_rows`, written with the others of its table before the
        next statement that names the table, or at the batch's end (`flush`)."""
        self._later.setdefault(table, (conflict, []))[1].append(row)

    def flush(self, statement: str | None = None) -> None:
        """Write the rows held by `insert_later`: those of the tables `statement`
        names, or all of them."""
        for table in [t for t in self._later if statement is None or f"{{{t}}}" in statement]:
            conflict, rows = self._later.pop(table)
            self.insert_rows(table, rows, conflict)

    def query(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Read the projection's own tables (never another projection's), as of the
        events applied so far in this transaction."""
        if self._later:
            self.flush(statement)
        return self.cursor.query(self._bind(statement), params)

    def query_in(
        self, statement: str, values: Sequence[Any], **params: Any
    ) -> list[dict[str, Any]]:
        """`query` of a statement naming a list as `IN (:in)`: each of `values` (at
        least one) a parameter, the list padded with its last to a power of two, so
        that every length of list takes one of a few texts (each bound once)."""
        statement, names = _listed(statement, values)
        return self.query(statement, **names, **params)

    def update(self, table: str, key: str, row: object, assignments: str, **params: Any) -> None:
        """Change the row of `table` whose `key` is `row`, and stamp it with the
        position of the event doing it."""
        params["row"], params["position"] = str(row), self.position
        self.execute(
            f"UPDATE {{{table}}} SET {assignments}, position = :position WHERE {key} = :row",
            **params,
        )


def _listed(statement: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """The statement with its `IN (:in)` naming each of `values` (at least one),
    padded with the last to a power of two, and those parameters."""
    listed = list(values)
    listed += [listed[-1]] * ((1 << (len(listed) - 1).bit_length()) - len(listed))
    names = {f"in{i}": value for i, value in enumerate(listed)}
    return statement.replace("(:in)", "(" + ", ".join(f":{n}" for n in names) + ")"), names


class Held:
    """One table's rows for a run of a batch, by their key: those the run needs
    read in one query (`load`), changed in memory by the handlers, and written
    back in one statement (`write`), every column of each row changed (`ON
    CONFLICT (key) DO UPDATE`): the rows that statements event by event would
    leave, in two statements a run."""

    def __init__(self, projection: type[SqlProjection], table: str, key: str) -> None:
        self.table, self.key = table, key
        self._upsert = f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in projection.column_types[table] if c != key
        )
        self.rows: dict[str, dict[str, Any] | None] = {}  # None: no row
        self.changed: dict[str, None] = {}  # the keys to write, in the order first changed
        self.dropped: dict[str, None] = {}  # the keys to delete (before writing)

    def load(self, w: Writer, keys: Collection[str]) -> None:
        """Read the rows of those of `keys` not held yet."""
        asked = sorted(k for k in keys if k not in self.rows)
        if asked:
            self.rows.update(dict.fromkeys(asked))
            statement = f"SELECT * FROM {{{self.table}}} WHERE {self.key} IN (:in)"
            for row in w.query_in(statement, asked):
                self.rows[row[self.key]] = row

    def change(self, key: str, **values: Any) -> dict[str, Any] | None:
        """The row of `key`, `values` set in it and to be written (None: it has no
        row, and nothing changes). A key the run neither loaded nor added is a
        KeyError: its change would otherwise be lost without a word."""
        row = self.rows[key]
        if row is not None:
            row.update(values)
            self.changed[key] = None
        return row

    def add(self, row: dict[str, Any]) -> None:
        """A new row (every column), to be written."""
        key = row[self.key]
        self.rows[key] = row
        self.changed[key] = None

    def drop(self, key: str) -> None:
        """The row of `key` deleted (nothing to do if it is known to have none)."""
        if key not in self.rows or self.rows[key] is not None:
            self.rows[key] = None
            self.changed.pop(key, None)
            self.dropped[key] = None

    def write(self, w: Writer) -> None:
        if self.dropped:
            delete = f"DELETE FROM {{{self.table}}} WHERE {self.key} IN (:in)"
            statement, names = _listed(delete, sorted(self.dropped))
            w.execute(statement, **names)
        w.insert_rows(self.table, [self.rows[k] for k in self.changed], self._upsert)
        self.changed.clear()
        self.dropped.clear()


class SqlProjection(Projection[ViewStore]):
    """A projection is a handler per event type, each a pure "event in, rows
    changed" function over the projection's own tables. Each subclass declares its
    own `@singledispatchmethod apply(self, event, w)` and registers handlers on it;
    its `topics` (what the runner reads from the log) follow from them."""

    name: str = ""
    tables: ClassVar[dict[str, str]] = {}  # table -> column definitions
    indexes: ClassVar[dict[str, str]] = {}  # index name -> "table (columns)"
    # The time it takes to apply one event, relative to the others' (measured on a
    # rebuild of each alone, BENCHMARKS.md): how a rebuild shares them out between
    # processes. A hint: a wrong one only makes a process wait for another.
    rebuild_cost: ClassVar[float] = 1.0
    # Indexes that only the API's reads use, never the projection's own statements:
    # a rebuild's scratch tables go without them (each insert there costs less);
    # the store's generation gets them after its rows, as it gets every index.
    reader_indexes: ClassVar[frozenset[str]] = frozenset()
    _handlers: ClassVar[dict[type, Callable[..., None]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.topics = tuple(sorted(get_topic(t) for t in handler_types(vars(cls)["apply"])))
        cls.column_types = {table: column_types(c) for table, c in cls.tables.items()}
        cls._handlers = {}  # event type -> its `apply` handler (`handler`)

    def __init__(self, view: ViewStore, catalog: Catalog) -> None:
        super().__init__(view)
        self.catalog = catalog

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """A batch of events (position, event), in order: `apply` for each, with
        `w.position` its position. A projection may take the batch at once (fold
        it) as long as the rows come out as they would one by one."""
        for notification_id, event in events:
            w.position = notification_id
            self.handler(type(event))(self, event, w)

    def handler(self, kind: type) -> Callable[..., None]:
        """What `apply` does with an event of `kind`, to be called with the
        projection first: looked up once a type, not bound for every event as
        `self.apply(...)` is (a rebuild applies millions)."""
        found = self._handlers.get(kind)
        if found is None:
            found = self._handlers[kind] = handler_for(vars(type(self))["apply"], kind)
        return found

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """The library's contract: one event, its rows and its position in one
        transaction. The runner does the same for many events at a time."""
        apply_batch(self, [(tracking.notification_id, domain_event)], tracking.notification_id)

    # --- generations ------------------------------------------------------------

    def names(self, generation: int) -> dict[str, str]:
        return {table: f"{table}_g{generation}" for table in self.tables}

    def tracking_key(self, generation: int) -> str:
        return f"{self.name}:g{generation}"

    def create_generation(self, c: Cursor, generation: int, *, clustered: bool = False) -> None:
        """`clustered` (SQLite): a keyed table WITHOUT ROWID, stored in its key's order."""
        names = self.names(generation)
        for table, columns in self.tables.items():
            keyed = " WITHOUT ROWID" if clustered and "PRIMARY KEY" in columns else ""
            c.execute(f"CREATE TABLE IF NOT EXISTS {names[table]} ({columns}){keyed}")
        readers = self.index_names(generation, self.reader_indexes) if clustered else []
        self.create_indexes(c, generation, readers)

    def create_indexes(self, c: Cursor, generation: int, existing: Collection[str] = ()) -> None:
        """Those not in `existing`: on PostgreSQL even `IF NOT EXISTS` waits for
        the table's writers, so a start skips what is there."""
        names = self.names(generation)
        specs = self.indexes.values()
        for spec, name in zip(specs, self.index_names(generation), strict=True):
            if name not in existing:
                c.execute(f"CREATE INDEX IF NOT EXISTS {name} ON " + spec.format_map(names))

    def index_names(self, generation: int, of: Collection[str] | None = None) -> list[str]:
        return [f"{index}_g{generation}" for index in self.indexes if of is None or index in of]

    def publish_generation(self, c: Cursor, generation: int) -> None:
        """Point the views at a generation: readers see all of it at once."""
        for table, physical in self.names(generation).items():
            c.execute(f"DROP VIEW IF EXISTS {table}")
            c.execute(f"CREATE VIEW {table} AS SELECT * FROM {physical}")
        c.execute(
            "INSERT INTO projection_generations (name, generation) VALUES (:name, :generation) "
            "ON CONFLICT (name) DO UPDATE SET generation = excluded.generation",
            {"name": self.name, "generation": generation},
        )

    def drop_generation(self, c: Cursor, generation: int) -> None:
        for physical in self.names(generation).values():
            c.execute(f"DROP TABLE IF EXISTS {physical}")


class GenerationChanged(RuntimeError):
    """A rebuild swapped the projection's tables while this batch was prepared."""


def apply_batch(
    projection: SqlProjection,
    events: Sequence[tuple[int, Any]],
    position: int,
    generation: int | None = None,
) -> None:
    """Apply events to one generation of the projection's tables and record
    `position` as its tracking position, in one transaction. The position is
    written first: on PostgreSQL a concurrent runner waits on that row and then
    fails instead of applying the batch twice; on SQLite it takes the write lock
    before anything is read."""
    store = projection.view
    if generation is None:
        generation = projection.view.generations()[projection.name]
    with store.transaction() as c:
        apply_in(c, projection, events, position, generation)


def apply_in(
    c: Cursor,
    projection: SqlProjection,
    events: Sequence[tuple[int, Any]],
    position: int,
    generation: int,
) -> None:
    """`apply_batch` inside the caller's transaction."""
    apply_many_in(c, [(projection, events, generation)], position)


def apply_many_in(
    c: Cursor,
    shares: Sequence[tuple[SqlProjection, Sequence[tuple[int, Any]], int]],
    position: int,
) -> None:
    """Several projections' batches (projection, events, generation) in the
    caller's one transaction: every tracking position first, then one read of the
    published generations for all of them (one round trip, not one each), then
    the events. Raises GenerationChanged when a rebuild has published a newer
    generation of one of them."""
    c.store.record_positions(c, {p.tracking_key(g): position for p, _, g in shares})
    if c.store.is_postgres:  # at commit, the API's watchers are woken (ledger/store/listener.py)
        c.execute("SELECT pg_notify(:channel, '')", {"channel": c.store.moved_channel})
    published = published_generations(c)
    for projection, _, generation in shares:
        current = published.get(projection.name)
        if current is not None and generation < current:
            raise GenerationChanged(projection.name)
    for projection, events, generation in shares:
        w = Writer(c, projection.names(generation), projection.column_types)
        projection.apply_all(events, w)
        w.flush()


def published_generation(c: Cursor, name: str) -> int | None:
    """The generation the projection's views show (None before its first)."""
    return published_generations(c).get(name)
