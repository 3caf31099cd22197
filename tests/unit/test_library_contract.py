"""What ledger/store/library.py relies on of our libraries beyond their promises,
checked against the installed versions: an upgrade that changes any of it fails
here, before it fails in production. Read from the libraries' signatures and
source, plus one run on an in-memory SQLite store."""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
import tomllib
from functools import singledispatchmethod
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import ProcessingEvent
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import (
    DatetimeAsISO,
    InfrastructureFactory,
    IntegrityError,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    Tracking,
    UUIDAsHex,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.projection import EventSourcedProjection
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteDatastore,
    SQLiteRecorder,
    SQLiteTrackingRecorder,
)
from eventsourcing.utils import Environment
from packaging.requirements import Requirement

from ledger.application import Ledger
from ledger.store.library import (
    LeanMapper,
    collect,
    datastore_of,
    handler_types,
    insert_tracking,
)

ROOT = Path(__file__).resolve().parents[2]


def _tree(function: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def self_attributes(function: Any, ctx: type[ast.expr_context]) -> set[str]:
    """The `self.<name>` a function assigns (ast.Store) or reads (ast.Load)."""
    return {
        node.attr
        for node in ast.walk(_tree(function))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ctx)
    }


def self_calls(function: Any) -> list[str]:
    """The `self.<name>(...)` a function calls, in the order written."""
    calls = [
        node
        for node in ast.walk(_tree(function))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    ]
    return [c.func.attr for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))]  # type: ignore[attr-defined]


def test_the_installed_eventsourcing_is_in_the_pinned_range() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [Requirement(d) for d in dependencies if Requirement(d).name == "eventsourcing"]
    assert pin.specifier.contains(version("eventsourcing"))
    assert any(s.operator == "<" for s in pin.specifier), "no upper bound on eventsourcing"


def test_record_and_notify_is_what_the_library_does_after_a_policy() -> None:
    """`record_and_notify` copies `process_event`'s steps after the policy (but the
    snapshots, which the ledger never takes): a new step there must be looked at."""
    assert self_calls(EventSourcedProjection.process_event) == [
        "policy",
        "_record",
        "_take_snapshots",
        "notify",  # deprecated, and a no-op
        "_notify",
    ]
    processing = ProcessingEvent[Any](tracking=Tracking("Ledger", 1))
    inspect.signature(Ledger._record).bind(None, processing)
    inspect.signature(Ledger._notify).bind(None, [])
    assert "processing_lock" in self_attributes(EventSourcedProjection.__init__, ast.Store)


def test_collect_does_what_collect_events_does_for_aggregates() -> None:
    """`collect` fills a processing event as the library's `collect_events` does."""
    from ledger.domain.clock import Tick

    made = [Tick.of_period(3600 * n, 3600) for n in (1, 2)]
    theirs = ProcessingEvent[Any](tracking=Tracking("Ledger", 1))
    theirs.collect_events(*[copy.deepcopy(a) for a in made])
    ours = ProcessingEvent[Any](tracking=Tracking("Ledger", 1))
    collect(ours, made)
    assert [(e.originator_id, type(e)) for e in ours.events] == [
        (e.originator_id, type(e)) for e in theirs.events
    ]
    assert len(ours.events) == 2
    assert list(ours.aggregates) == list(theirs.aggregates) == [a.id for a in made]
    assert vars(ours).keys() == vars(theirs).keys()


def test_the_lean_mapper_takes_the_steps_the_librarys_takes() -> None:
    """`LeanMapper.to_domain_event` copies the steps of the library's after
    decoding (tests/unit/test_stored_events.py replays every event, upcasts
    included, through both): a new step there must be looked at."""
    called = {
        ast.unparse(node.func)
        for node in ast.walk(_tree(Mapper.to_domain_event))
        if isinstance(node, ast.Call)
    }
    assert called == {
        "resolve_topic",
        "self.cipher.decrypt",
        "self.compressor.decompress",
        "self.transcoder.decode",
        "MapperDeserialisationError",
        "cast",
        "type",
        "find_id_convertor",
        "id_convertor",
        "getattr",
        "event_state.pop",
        "getattr(cls, f'upcast_v{from_version}_v{from_version + 1}')",
        "object.__new__",
        "object.__setattr__",
    }


def test_the_lean_mapper_leaves_a_compressed_log_and_a_bad_event_to_the_library() -> None:
    """A compressed (or encrypted) log goes straight to the library's mapper: its
    bytes are decoded once, not first tried as JSON (which would fail, and then be
    decoded again by the library)."""
    from ledger.domain.clock import Tick

    transcoder = JSONTranscoder()
    transcoder.register(DatetimeAsISO())
    transcoder.register(UUIDAsHex())
    event = Tick.of_period(3600, 3600).collect_events()[0]
    compressed = LeanMapper(transcoder, compressor=ZlibCompressor())
    stored = compressed.to_stored_event(event)
    decoded: list[bytes] = []
    decode = transcoder.decode
    transcoder.decode = lambda data: (decoded.append(data), decode(data))[1]  # type: ignore[method-assign]
    assert vars(compressed.to_domain_event(stored)) == vars(event)
    assert len(decoded) == 1
    lean = LeanMapper(transcoder)
    bad = type(stored)(stored.originator_id, 1, stored.topic, b"{not json")
    with pytest.raises(MapperDeserialisationError, match=str(stored.originator_id)):
        lean.to_domain_event(bad)


@pytest.mark.parametrize("recorder", [SQLiteTrackingRecorder, PostgresTrackingRecorder])
def test_a_tracking_recorder_inserts_a_position_with_the_callers_cursor(recorder: type) -> None:
    inspect.signature(recorder._insert_tracking).bind(None, object(), Tracking("p", 1))


def test_a_position_is_written_in_the_callers_transaction_and_only_forward() -> None:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": f"file:contract-{uuid4().hex}?mode=memory&cache=shared",
        "CREATE_TABLE": "y",
    }
    factory = InfrastructureFactory.construct(Environment("contract", env))
    try:
        tracking = factory.tracking_recorder()
        datastore = datastore_of(tracking)
        with datastore.transaction(commit=True) as cursor:
            insert_tracking(tracking, cursor, Tracking("p", 3))
        assert tracking.max_tracking_id("p") == 3
        with pytest.raises(IntegrityError), datastore.transaction(commit=True) as cursor:
            insert_tracking(tracking, cursor, Tracking("p", 3))
    finally:
        factory.close()


def test_recorders_keep_their_datastore_and_events_table_name() -> None:
    for base in (SQLiteRecorder, PostgresRecorder):
        assert "datastore" in self_attributes(base.__init__, ast.Store)
    for aggregate_recorder in (SQLiteAggregateRecorder, PostgresAggregateRecorder):
        assert "events_table_name" in self_attributes(aggregate_recorder.__init__, ast.Store)
    for datastore in (SQLiteDatastore, PostgresDatastore):
        inspect.signature(datastore.transaction).bind(None, commit=False)
    inspect.signature(PostgresDatastore.get_connection).bind(None)
    assert "schema" in self_attributes(PostgresDatastore.__init__, ast.Store)


def test_the_postgres_recorder_inserts_events_with_the_statement_we_replace() -> None:
    """BinaryProcessRecorder swaps `insert_events_statement` for one taking the same
    single parameter in binary: the library must still build it from these names,
    run it with one parameter, and read the notification ids it returns."""
    assigned = self_attributes(PostgresAggregateRecorder.__init__, ast.Store)
    assert {"events_table_name", "stored_event_type_name", "insert_events_statement"} <= assigned
    assert "insert_events_statement" in self_attributes(
        PostgresAggregateRecorder._insert_stored_events, ast.Load
    )
    insert = inspect.getsource(PostgresAggregateRecorder._insert_stored_events)
    assert "params=(pg_stored_events,)" in insert
    returning = inspect.getsource(PostgresApplicationRecorder.__init__)
    assert 'self.insert_events_statement += SQL(" RETURNING notification_id")' in returning
    assert hasattr(PostgresApplicationRecorder, "_fetch_ids_after_insert_events")
    # With the database functions on, the library would not use the statement at all.
    parameters = inspect.signature(PostgresDatastore.__init__).parameters
    assert parameters["enable_db_functions"].default is False


def test_a_singledispatchmethod_shows_its_registered_types() -> None:
    class Handlers:
        @singledispatchmethod
        def apply(self, event: object) -> None: ...

        @apply.register
        def _(self, event: int) -> None: ...

        @apply.register
        def _(self, event: str) -> None: ...

    assert sorted(handler_types(vars(Handlers)["apply"]), key=str) == [int, str]


def test_rate_limit_hits_start_no_threads_and_counters_still_expire() -> None:
    """api/ratelimit.py replaces limits' private expiry hook (a Timer thread started
    from hits every 10 ms) with one sweep thread: if the library renames the hook,
    hits start threads again and this fails."""
    import threading
    import time

    from api.ratelimit import Limits, RateLimited

    limits = Limits("1000/minute", "5/minute", "5/minute")  # a slow machine: not per second
    time.sleep(0.05)  # the library's first timer, started in its __init__, has run
    before = threading.active_count()
    started: list[threading.Thread] = []
    original = threading.Thread.start
    threading.Thread.start = lambda self: (started.append(self), original(self))[1]  # type: ignore[method-assign]
    try:
        for n in range(300):
            limits.user(f"user_{n % 3}")
            if n % 50 == 0:
                time.sleep(0.015)  # past the library's 10 ms timer
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    # (fewer is fine: a thread of an earlier test may end meanwhile on a slow machine)
    assert started == [] and threading.active_count() <= before
    with pytest.raises(RateLimited):
        for _ in range(1001):
            limits.user("user_busy")


def test_the_rate_limit_sweep_drops_expired_counters_a_chunk_at_a_time() -> None:
    """The sweep frees what has expired and keeps the rest, whatever the chunk size
    (it goes a chunk at a time so as not to stall the event loop)."""
    import time

    from api.ratelimit import _Memory

    class Quiet(_Memory):
        SWEEP_SECONDS = 3600.0  # its own thread stays out of the way
        CHUNK = 7

    storage = Quiet()
    time.sleep(0.05)  # the library's own first timer, started in its __init__, has run
    for n in range(50):
        storage.incr(f"old:{n}", expiry=0.01)
        storage.incr(f"new:{n}", expiry=60)
    time.sleep(0.02)
    assert storage.expire() == 50
    assert set(storage.storage) == set(storage.expirations) == {f"new:{n}" for n in range(50)}
    assert storage.get("new:3") == 1 and storage.get("old:3") == 0
