"""The ledger on real stores: receipts recorded once, processed exactly once, in
any order; failures retried, then dead, then retried by an operator."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.domain.customer import Customer
from ledger.domain.receipt import Delivery, Outcome, Receipt
from ledger.domain.subscription import Subscription
from ledger.domain.usage import Usage
from ledger.intake import GroupCommitter, StoreUnavailable
from ledger.opening import open_ledger
from ledger.stripe.payloads import read_delivery
from tests import stripe_objects as so
from tests.streams import shuffled_with_duplicates, webhook_streams
from tests.unit.test_any_order import run, state_of, states

_prefixes = itertools.count()
USER = "user_1767225600_abcdefghij"


def delivery(
    evt_id: str,
    event_type: str = "customer.subscription.created",
    created: int = 100,
    sub: str = "sub_1",
) -> Delivery:
    obj = so.subscription(sub, "cus_1") if event_type.startswith("customer.sub") else {"id": "x"}
    body = so.body_of(so.event(evt_id, event_type, obj, created=created))
    return read_delivery(body)


def receipt_events(ledger: Ledger) -> list[Receipt.Received]:
    return [
        e
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if isinstance(e := ledger.mapper.to_domain_event(n), Receipt.Received)
    ]


@settings(max_examples=15)
@given(st.data())
def test_any_delivery_order_through_the_store_ends_in_the_ordered_state(
    ledger: Ledger, data: st.DataObject
) -> None:
    stream = data.draw(webhook_streams(prefix=f"p{next(_prefixes)}_"))
    delivered = data.draw(shuffled_with_duplicates(stream))
    expected = run(stream)
    committer = GroupCommitter(ledger)
    try:
        futures = [committer.submit(read_delivery(d.body)) for d in delivered]
        recorded = [f.result(10) for f in futures]
    finally:
        committer.close()
    assert sum(recorded) == len(stream)  # each event id recorded once, the rest duplicates
    ledger.process_new()
    actual = {state_of(revealed(ledger, ledger.repository.get(i))) for i in expected.aggregates}
    assert actual == states(expected)
    assert all(ledger.receipt(d.event_id).is_settled for d in stream)


def revealed(ledger: Ledger, aggregate: Any) -> Any:
    """A customer holds its email and name encrypted; the plain values to compare."""
    if isinstance(aggregate, Customer):
        for field in ("email", "name"):
            value = getattr(aggregate, field)
            if value is not None:
                setattr(aggregate, field, ledger.personal.reveal(value))
    return aggregate


def test_record_answers_the_positions_and_records_all_or_nothing(ledger: Ledger) -> None:
    """`Ledger.record` (the writer thread's; SQLite's stage one) writes the rows
    directly: its answer is each receipt's position in the log, and a group with
    one receipt already recorded raises and records none of the others."""
    positions = ledger.record([delivery("evt_pos_1"), delivery("evt_pos_2", sub="sub_2")])
    log = ledger.recorder.select_notifications(start=1, limit=100)
    assert positions == [n.id for n in log if n.topic == get_topic(Receipt.Received)]
    with pytest.raises(IntegrityError):
        ledger.record([delivery("evt_pos_3", sub="sub_3"), delivery("evt_pos_1")])
    assert [e.stripe_event_id for e in receipt_events(ledger)] == ["evt_pos_1", "evt_pos_2"]


def test_a_duplicate_inside_one_group_is_answered_without_failing_the_others(
    ledger: Ledger,
) -> None:
    gate = threading.Event()
    committer = GroupCommitter(ledger)
    try:
        original = ledger.record

        def slow_record(deliveries):  # hold the writer so that the next ones group up
            gate.wait(5)
            return original(deliveries)

        ledger.record = slow_record  # type: ignore[method-assign]
        first = committer.submit(delivery("evt_0"))
        group = [committer.submit(delivery(e)) for e in ("evt_1", "evt_2", "evt_1", "evt_0")]
        gate.set()
        assert first.result(10) is True
        assert [f.result(10) for f in group] == [True, True, False, False]
    finally:
        committer.close()
    assert sorted(r.stripe_event_id for r in receipt_events(ledger)) == ["evt_0", "evt_1", "evt_2"]


def test_a_delivery_is_stored_encrypted_whichever_path_records_it(ledger: Ledger) -> None:
    """Grouped with usage records (the general path) or alone: its body, about a
    customer, is stored encrypted; usage records alone take the fast path, as
    they are (they hold no personal data)."""
    usage = [Usage(USER, "ai_requests", 1, f"k{i}", 100) for i in range(3)]
    ledger.record(usage[:2])  # usage records only: their events inserted directly
    committer = GroupCommitter(ledger)
    try:
        gate = threading.Event()
        original = ledger.record

        def slow_record(items):  # hold the writer so that the next ones group up
            gate.wait(5)
            return original(items)

        ledger.record = slow_record  # type: ignore[method-assign]
        first = committer.submit(delivery("evt_0"))
        group = [committer.submit(usage[2]), committer.submit(delivery("evt_1"))]
        gate.set()
        assert [first.result(10), *(f.result(10) for f in group)] == [True, True, True]
    finally:
        committer.close()
    for evt in ("evt_0", "evt_1"):
        payload = ledger.receipt(evt).payload
        assert payload.startswith("pd1:cus_1:")
        assert "sub_1" not in payload and "sub_1" in ledger.personal.reveal(payload)
    assert all(ledger.repository.get(u.aggregate_id).quantity == 1 for u in usage)


def test_a_retried_delivery_in_a_group_costs_one_more_transaction_not_one_each(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.record([delivery("evt_0")])  # Stripe's retry of it arrives with new ones
    original, calls = ledger.record, []

    def counted(deliveries):  # type: ignore[no-untyped-def]
        calls.append(sorted(d.stripe_event_id for d in deliveries))
        return original(deliveries)

    monkeypatch.setattr(ledger, "record", counted)
    committer = GroupCommitter(ledger)
    try:
        assert committer._record([delivery(e) for e in ("evt_1", "evt_0", "evt_2")]) == {
            Receipt.create_id("evt_1"): True,
            Receipt.create_id("evt_0"): False,
            Receipt.create_id("evt_2"): True,
        }
    finally:
        committer.close()
    assert calls == [["evt_0", "evt_1", "evt_2"], ["evt_1", "evt_2"]]


def test_the_writer_thread_survives_any_failure_and_goes_on(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while recording one by one (after a duplicate in the batch) used to
    end the writer thread: every later delivery then waited for 503."""
    from eventsourcing.persistence import IntegrityError

    original = ledger.record
    failures = iter([IntegrityError("a duplicate in the batch"), RuntimeError("a bug")])

    def failing(deliveries):  # type: ignore[no-untyped-def]
        raise next(failures)

    committer = GroupCommitter(ledger)
    try:
        monkeypatch.setattr(ledger, "record", failing)
        with pytest.raises(StoreUnavailable):
            committer.submit(delivery("evt_1")).result(10)
        monkeypatch.setattr(ledger, "record", original)
        assert committer.submit(delivery("evt_2")).result(10) is True
    finally:
        committer.close()


def test_concurrent_deliveries_of_one_event_are_recorded_once(ledger: Ledger, settings) -> None:
    """Separate ledgers (own connections), as separate API processes would have."""
    others = [open_ledger(settings) for _ in range(4)]
    barrier = threading.Barrier(8)

    def deliver(i: int) -> bool:
        target = others[i % len(others)]
        barrier.wait(5)
        try:
            target.record([delivery("evt_same")])
            return True
        except Exception:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(deliver, range(8)))
    for other in others:
        other.close()
    assert results.count(True) == 1
    assert [r.stripe_event_id for r in receipt_events(ledger)] == ["evt_same"]


def test_each_receipt_is_processed_exactly_once_by_competing_processors(
    ledger: Ledger, settings
) -> None:
    ledger.record([delivery(f"evt_{i}", sub=f"sub_{i}") for i in range(40)])
    processors = [open_ledger(settings) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda p: [p.process_new() for _ in range(3)], processors))
    finally:
        for p in processors:
            p.close()
    outcomes = [
        e
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if isinstance(e := ledger.mapper.to_domain_event(n), Receipt.Processed)
    ]
    assert len(outcomes) == 40
    started = [
        e
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if isinstance(e := ledger.mapper.to_domain_event(n), Subscription.Started)
    ]
    assert len(started) == 40


def subscription_event(evt_id: str, created: int, **fields: object) -> Delivery:
    obj = so.subscription("sub_1", "cus_1", **fields)
    body = so.body_of(so.event(evt_id, "customer.subscription.updated", obj, created=created))
    return read_delivery(body)


def test_a_processor_whose_kept_aggregate_another_one_changed_recovers(
    ledger: Ledger, settings
) -> None:
    """Processor A keeps the subscription in memory; processor B changes it. A's
    next save conflicts, A forgets what it kept, and its next pass applies."""
    with open_ledger(settings) as b:
        ledger.record([delivery("evt_1", created=100)])
        ledger.process_new()  # A keeps sub_1 at version 1
        ledger.record([subscription_event("evt_2", 200, cancel_at_period_end=True)])
        b.process_new()  # B takes evt_2: sub_1 is at version 2 in the store
    ledger.record([subscription_event("evt_3", 300, status="past_due")])
    ledger.process_new()  # A's kept version 1 conflicts
    ledger.process_new()
    assert ledger.receipt("evt_3").outcome is Outcome.APPLIED
    subscription = ledger.repository.get(Subscription.create_id("sub_1"))
    assert (subscription.status, subscription.cancel_at_period_end) == ("past_due", False)


def test_a_poisoned_receipt_never_blocks_the_ones_behind_it(
    ledger: Ledger, poisoned: dict[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    poisoned["evt_bad"] = True
    ledger.record([delivery("evt_bad", sub="sub_bad"), delivery("evt_good", sub="sub_good")])
    ledger.process_new()
    assert ledger.receipt("evt_good").outcome is Outcome.APPLIED
    bad = ledger.receipt("evt_bad")
    assert (bad.outcome, bad.attempts) == (Outcome.FAILED, 1)
    assert "RuntimeError: bug while handling evt_bad" in bad.last_error
    assert "evt_bad" in caplog.text


def test_a_failing_receipt_is_retried_then_dead_then_retried_by_an_operator(
    ledger: Ledger, poisoned: dict[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    poisoned["evt_bad"] = True
    ledger.record([delivery("evt_bad", sub="sub_bad")])
    ledger.process_new()  # attempt 1
    assert ledger.retry_due() == 1  # attempt 2 (back-off 0 s in tests)
    assert ledger.retry_due() == 1  # attempt 3 of 3: dead
    assert ledger.retry_due() == 0
    dead = ledger.receipt("evt_bad")
    assert (dead.outcome, dead.attempts) == (Outcome.DEAD, 3)
    assert [r.stripe_event_id for r in ledger.dead_receipts()] == ["evt_bad"]
    assert any(r.levelname == "ERROR" and "evt_bad" in r.getMessage() for r in caplog.records)

    poisoned["evt_bad"] = False  # the fix is deployed
    assert ledger.retry("evt_bad").outcome is Outcome.APPLIED
    assert ledger.dead_receipts() == []
    assert ledger.repository.get(Subscription.create_id("sub_bad")).status == "active"


def test_the_retry_scan_reads_only_what_was_recorded_since_the_last_one(
    ledger: Ledger, poisoned: dict[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no failure for a long time, each scan for failed attempts reads from
    where the last one ended, not from the log's start; a failure recorded later
    is still found and retried."""
    ledger.record([delivery(f"evt_ok{i}", sub=f"sub_ok{i}") for i in range(20)])
    ledger.process_new()
    assert ledger.retry_due() == 0
    reads: list[tuple[int, int | None]] = []
    read = ledger.recorder.read_notifications

    def counted(start: int, limit: int, stop: int | None, topics: Any) -> Any:
        reads.append((start, stop))
        return read(start, limit, stop, topics)

    monkeypatch.setattr(ledger.recorder, "read_notifications", counted)
    head = ledger.recorder.max_notification_id()
    assert ledger.retry_due() == 0
    assert reads and all(start > head for start, _ in reads), reads  # not before the head
    poisoned["evt_bad"] = True
    ledger.record([delivery("evt_bad", sub="sub_bad")])
    ledger.process_new()  # attempt 1 fails
    assert ledger.retry_due() == 1
    assert ledger.receipt("evt_bad").attempts == 2


def test_back_off_waits_before_the_next_attempt(ledger: Ledger, poisoned: dict[str, bool]) -> None:
    ledger.retry_base_seconds = 60
    poisoned["evt_bad"] = True
    ledger.record([delivery("evt_bad", sub="sub_bad")])
    ledger.process_new()
    retry_at = ledger.receipt("evt_bad").retry_at
    assert retry_at is not None
    assert ledger.retry_due(now=retry_at - 1) == 0
    assert ledger.retry_due(now=retry_at) == 1
    assert ledger.receipt("evt_bad").attempts == 2
    # the README's back-off: base times 4^n, so the next wait is four times the first
    assert ledger.receipt("evt_bad").retry_at == retry_at + 240


def test_a_batch_the_store_refused_leaves_nothing_behind_in_memory(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage two changes the aggregates it keeps in memory in place: when the store
    refuses the batch, those changes must not outlive it."""
    from eventsourcing.persistence import OperationalError

    ledger.record([delivery("evt_1", created=100)])
    ledger.process_new()  # the subscription is now kept in memory
    ledger.record([subscription_event("evt_2", 200, status="canceled")])
    save = ledger._record
    monkeypatch.setattr(
        ledger, "_record", lambda _: (_ for _ in ()).throw(OperationalError("down"))
    )
    with pytest.raises(OperationalError):
        ledger.process_new()
    monkeypatch.setattr(ledger, "_record", save)
    ledger.process_new()
    assert ledger.receipt("evt_2").outcome is Outcome.APPLIED
    subscription = ledger.repository.get(Subscription.create_id("sub_1"))
    assert subscription.status == "canceled"


@pytest.mark.parametrize(
    ("start", "limit", "stop", "topics"),
    [
        (1, 10_000, None, "all"),
        (3, 7, None, "all"),
        (5, 1_000, 30, "all"),
        (1, 10_000, None, "processed"),
        (10, 5, 200, "processed"),
        (10_000, 10, None, "all"),
        (1, 10_000, None, "unfiltered"),
        (4, 9, 40, "unfiltered"),
    ],
)
def test_the_lean_log_read_answers_what_the_library_read_answers(
    ledger: Ledger, start: int, limit: int, stop: int | None, topics: str
) -> None:
    """`read_notifications` (what stage two, the projections and a rebuild read) is
    the library's `select_notifications`: the same rows, decoded to the same events."""
    ledger.record([delivery(f"evt_{i}", sub=f"sub_{i}") for i in range(12)])
    ledger.process_new()
    every = ledger.recorder.select_notifications(start=1, limit=10_000)
    named = sorted({n.topic for n in every})
    chosen = named if topics == "all" else [t for t in named if t.endswith("Receipt.Processed")]
    assert len(chosen) >= 1 and len(every) > 30
    if topics == "unfiltered":  # None: every topic (what the seal reads)
        ours = ledger.recorder.read_notifications(start, limit, stop, None)
        theirs = ledger.recorder.select_notifications(start=start, limit=limit, stop=stop)
    else:
        ours = ledger.recorder.read_notifications(start, limit, stop, chosen)
        theirs = ledger.recorder.select_notifications(
            start=start, limit=limit, stop=stop, topics=chosen
        )
    fields = ("id", "originator_id", "originator_version", "topic", "state")
    assert [tuple(getattr(n, f) for f in fields) for n in ours] == [
        tuple(getattr(n, f) for f in fields) for n in theirs
    ]
    assert [vars(ledger.mapper.to_domain_event(n)) for n in ours] == [
        vars(ledger.mapper.to_domain_event(n)) for n in theirs
    ]
    if start == 1 and stop is None and topics in ("all", "unfiltered"):
        assert len(ours) == len(every)


def test_the_lean_log_read_of_no_topic_reads_nothing_on_either_store(ledger: Ledger) -> None:
    """None is every topic; an empty list is none (the library's own read takes an
    empty list for every topic on SQLite: a rebuild of projections with no topic
    would have folded the whole log there)."""
    ledger.record([delivery("evt_1")])
    assert ledger.recorder.read_notifications(1, 100, None, []) == []
    assert len(ledger.recorder.read_notifications(1, 100, None, None)) == 1


def test_existing_names_exactly_the_aggregates_with_events(ledger: Ledger) -> None:
    """What stage two asks once a batch (`prefetch`): an aggregate with several
    events is named once, one never recorded is not."""
    ledger.record([delivery(f"evt_x{i}", sub=f"sub_x{i}") for i in range(5)])
    ledger.process_new()
    every = ledger.recorder.select_notifications(start=1, limit=10_000)
    recorded = {n.originator_id for n in every}
    several = {n.originator_id for n in every if n.originator_version > 1}
    assert several, "some aggregate has more than one event"
    unknown = {uuid4() for _ in range(3)}
    asked = [*recorded, *unknown, *several]  # repeated ids too
    assert ledger.recorder.existing(asked) == recorded
    assert ledger.recorder.existing(list(unknown)) == set()
    assert ledger.recorder.existing([]) == set()


def test_the_log_compresses_what_it_stores_with_lz4_on_postgresql(postgres_url: str) -> None:
    """A log made before (pglz, the server's default) is switched when it is opened;
    what it held before reads back as ever, and what comes after is stored in lz4.
    (Without a master key: encrypted payloads do not compress, whichever method.)"""
    import psycopg

    from tests.conftest import make_settings

    def sql(statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    setting = (
        "SELECT attcompression FROM pg_attribute "
        "WHERE attrelid = 'ledger_events'::regclass AND attname = 'state'"
    )
    stored = "SELECT pg_column_compression(state) FROM ledger_events ORDER BY notification_id"
    settings = make_settings(postgres_url, LEDGER_MASTER_KEY=None)

    def big(evt: str, sub: str) -> Delivery:
        obj = {**so.subscription(sub, "cus_1"), "metadata": {"note": "x" * 6000}}
        return read_delivery(
            so.body_of(so.event(evt, "customer.subscription.created", obj, created=200))
        )

    first = open_ledger(settings)
    try:
        sql("ALTER TABLE ledger_events ALTER COLUMN state SET COMPRESSION pglz")
        first.record([big("evt_before", "sub_before")])
    finally:
        first.close()
    assert sql(setting) == [("p",)]
    assert sql(stored) == [("pglz",)]
    ledger = open_ledger(settings)
    try:
        assert sql(setting) == [("l",)]
        ledger.record([big("evt_after", "sub_after")])
        assert sql(stored) == [("pglz",), ("lz4",)]
        assert [r.stripe_event_id for r in receipt_events(ledger)] == ["evt_before", "evt_after"]
        ledger.process_new()
        assert (
            len(
                ledger.recorder.read_notifications(
                    1, 100, None, ["ledger.receipt:Receipt.Processed"]
                )
            )
            == 2
        )
    finally:
        ledger.close()


def test_two_processes_making_keys_for_the_same_customers_end_with_one_key_each(
    ledger: Ledger, settings
) -> None:
    """Keys are made in one statement and read back in the same transaction: when
    two writers make keys for the same new customers at once, each answers the key
    that was stored first, and it is the one the table keeps."""
    other = open_ledger(settings)
    try:
        subjects = [f"cus_race_{i}" for i in range(40)]
        tables = [ledger.personal._keys, other.personal._keys]  # type: ignore[attr-defined]
        start = threading.Barrier(2)

        def make(n: int) -> dict[str, str]:
            start.wait()
            return tables[n].add({s: f"wrapped_by_{n}_{s}" for s in subjects})

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(make, [0, 1])
        assert first == second == tables[0].get(subjects)
        assert sorted(first) == sorted(subjects)
    finally:
        other.close()
