"""Stage one's writer on the event loop (PostgreSQL): every delivery recorded once,
byte for byte, in groups; duplicates (in a group, in the log, from another
process at the same moment) answered False; a store that fails answers
StoreUnavailable and the writer goes on. Usage records go through the same
writer: idempotent on their key, a batch all or none, never split."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain.usage import Usage, UsageRecord
from ledger.intake import AsyncGroupCommitter, StoreUnavailable
from ledger.opening import open_ledger
from ledger.store.async_writer import AsyncEventWriter
from ledger.store.url import Store
from ledger.stripe.payloads import read_delivery
from tests import stripe_objects as so
from tests.conftest import make_settings
from tests.integration.test_ledger import delivery, receipt_events


@pytest.fixture
def pg_ledger(postgres_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(make_settings(postgres_url))
    try:
        yield ledger
    finally:
        ledger.close()


def committer(ledger: Ledger, writers: int = 2) -> AsyncGroupCommitter:
    """As the API process builds it: connections of its own to the ledger's database."""
    env = ledger.env
    conninfo = Store(
        f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/"
        f"{env['POSTGRES_DBNAME']}"
    ).conninfo()
    pool = [AsyncEventWriter(ledger.recorder, conninfo) for _ in range(writers)]
    return AsyncGroupCommitter(ledger, pool)


def submit_all(ledger: Ledger, items: list[Any], writers: int = 2) -> list[bool]:
    """Submit every item at once to a fresh committer; its answers in order."""

    async def main() -> list[bool]:
        writer = committer(ledger, writers)
        try:
            return list(await asyncio.gather(*(writer.submit(item) for item in items)))
        finally:
            await writer.aclose()

    return asyncio.run(main())


def test_concurrent_deliveries_are_recorded_once_each_in_groups(pg_ledger: Ledger) -> None:
    ids = [f"evt_{i}" for i in range(300)]
    offered = [delivery(e) for e in ids] + [delivery(e) for e in ids[::7]]  # some twice

    answers = submit_all(pg_ledger, offered)
    assert answers[: len(ids)] == [True] * len(ids)  # the first of each, in one go
    assert answers[len(ids) :] == [False] * len(ids[::7])
    stored = receipt_events(pg_ledger)
    assert sorted(r.stripe_event_id for r in stored) == sorted(ids)
    by_id = {d.stripe_event_id: d.payload for d in offered}
    # byte for byte, once revealed (bodies about a customer are stored encrypted)
    assert all(pg_ledger.personal.reveal(r.payload) == by_id[r.stripe_event_id] for r in stored)


def test_a_duplicate_in_the_log_and_in_the_group_is_answered_false(pg_ledger: Ledger) -> None:
    pg_ledger.record([delivery("evt_0")])  # Stripe's retry arrives with new ones

    names = ("evt_1", "evt_0", "evt_2", "evt_1")
    answers = submit_all(pg_ledger, [delivery(e) for e in names], writers=1)
    assert answers == [True, False, True, False]
    assert sorted(r.stripe_event_id for r in receipt_events(pg_ledger)) == [
        "evt_0",
        "evt_1",
        "evt_2",
    ]


def test_two_processes_racing_on_one_event_record_it_once(pg_ledger: Ledger) -> None:
    async def main() -> list[bool]:
        first, second = committer(pg_ledger), committer(pg_ledger)
        try:
            offered = [w.submit(delivery(f"evt_{i}")) for i in range(50) for w in (first, second)]
            return list(await asyncio.gather(*offered))
        finally:
            await first.aclose()
            await second.aclose()

    answers = asyncio.run(main())
    assert all(answers[i] != answers[i + 1] for i in range(0, len(answers), 2))  # one True each
    assert len(receipt_events(pg_ledger)) == 50


def test_a_failing_store_answers_unavailable_and_the_writer_goes_on(pg_ledger: Ledger) -> None:
    async def main() -> tuple[BaseException | bool, bool]:
        writer = committer(pg_ledger)
        good = writer._writers[0]._conninfo  # type: ignore[attr-defined]
        for w in writer._writers:  # type: ignore[attr-defined]
            w._conninfo = "host=127.0.0.1 port=1 connect_timeout=1"
        try:
            failed = await asyncio.gather(writer.submit(delivery("evt_1")), return_exceptions=True)
            for w in writer._writers:  # type: ignore[attr-defined]
                w._conninfo = good
            return failed[0], await writer.submit(delivery("evt_2"))
        finally:
            await writer.aclose()

    failed, recorded = asyncio.run(main())
    assert isinstance(failed, StoreUnavailable)
    assert recorded is True
    assert [r.stripe_event_id for r in receipt_events(pg_ledger)] == ["evt_2"]


def usage(key: str, quantity: int = 1) -> Usage:
    return Usage("user_1767225600_abcdefghij", "ai_requests", quantity, key, 1_767_225_600)


def usage_events(ledger: Ledger) -> list[UsageRecord.Recorded]:
    return [
        e
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if isinstance(e := ledger.mapper.to_domain_event(n), UsageRecord.Recorded)
    ]


def test_usage_records_share_the_writer_a_batch_in_one_transaction(pg_ledger: Ledger) -> None:
    """Usage records, as webhook receipts: idempotent on their key, a batch (even
    past `max_group`) never split, answered once committed."""
    batch = [usage(f"k{i}") for i in range(300)]
    sizes: list[int] = []

    async def main() -> tuple[list[bool], list[bool], bool]:
        writer = committer(pg_ledger)
        for w in writer._writers:  # type: ignore[attr-defined]
            insert = w.insert_new

            async def counted(events: Any, insert: Any = insert) -> Any:
                sizes.append(len(events))
                return await insert(events)

            w.insert_new = counted
        try:
            receipt = writer.submit(delivery("evt_1"))
            first = await writer.commit(batch, 10)
            again = await writer.commit([usage("k0", 5), usage("k_new"), usage("k_new")], 10)
            return first, again, await receipt
        finally:
            await writer.aclose()

    first, again, receipt = asyncio.run(main())
    assert first == [True] * 300 and receipt is True
    assert again == [False, True, False]  # k0 a duplicate; k_new once
    assert 300 in sizes or 301 in sizes  # the batch in one insert (with the receipt, maybe)
    stored = usage_events(pg_ledger)
    assert len(stored) == 301
    assert {e.idempotency_key: e.quantity for e in stored}["k0"] == 1  # the first one's


def test_a_failed_batch_records_none_of_it(pg_ledger: Ledger) -> None:
    async def main() -> tuple[BaseException | None, list[bool]]:
        writer = committer(pg_ledger, writers=1)
        good = writer._writers[0]._conninfo  # type: ignore[attr-defined]
        writer._writers[0]._conninfo = "host=127.0.0.1 port=1 connect_timeout=1"  # type: ignore[attr-defined]
        try:
            try:
                await writer.commit([usage("a"), usage("b")], 10)
                failed = None
            except StoreUnavailable as exc:
                failed = exc
            writer._writers[0]._conninfo = good  # type: ignore[attr-defined]
            return failed, await writer.commit([usage("b"), usage("c")], 10)
        finally:
            await writer.aclose()

    failed, retried = asyncio.run(main())
    assert isinstance(failed, StoreUnavailable)
    assert retried == [True, True]
    assert sorted(e.idempotency_key for e in usage_events(pg_ledger)) == ["b", "c"]


def test_the_api_on_postgresql_meters_through_the_writer_on_the_event_loop(
    postgres_url: str,
) -> None:
    from api.bootstrap import Parts

    parts = Parts(make_settings(postgres_url))
    try:
        assert isinstance(parts.committer, AsyncGroupCommitter)
        assert parts.metering._committer is parts.committer  # type: ignore[attr-defined]
        assert parts.intake._committer is parts.committer  # type: ignore[attr-defined]
    finally:
        asyncio.run(parts.close_async())
        parts.close()


def test_new_customers_keys_made_on_the_event_loop_are_the_ones_stage_two_reads(
    pg_ledger: Ledger, postgres_url: str
) -> None:
    """The writer stores the keys of a group's new customers in one round trip
    before their deliveries are encrypted. A key another process made first for
    a customer is the one used, and stage two reads every delivery with the key
    table's keys."""
    from ledger.domain.subscription import Subscription

    other = open_ledger(make_settings(postgres_url))
    try:  # another process got cus_9's key in first
        other.personal.prepare(["cus_9"])
        kept = other.personal._keys.get(["cus_9"])  # type: ignore[attr-defined]
    finally:
        other.close()
    customers = [f"cus_{i}" for i in range(12)]
    offered = [
        read_delivery(
            so.body_of(
                so.event(
                    f"evt_k{i}",
                    "customer.subscription.created",
                    so.subscription(f"sub_k{i}", customer),
                    created=100,
                )
            )
        )
        for i, customer in enumerate(customers)
    ]

    assert submit_all(pg_ledger, offered) == [True] * len(offered)
    table = pg_ledger.personal._keys.get(customers)  # type: ignore[attr-defined]
    assert sorted(table) == sorted(customers) and table["cus_9"] == kept["cus_9"]
    pg_ledger.process_new()
    started = [
        e
        for n in pg_ledger.recorder.select_notifications(start=1, limit=10_000)
        if isinstance(e := pg_ledger.mapper.to_domain_event(n), Subscription.Started)
    ]
    assert sorted(e.stripe_customer_id for e in started) == sorted(customers)


def test_a_group_has_one_deadline_for_its_keys_and_its_rows(pg_ledger: Ledger) -> None:
    """LEDGER_WEBHOOK_WRITE_TIMEOUT bounds the whole write: keys of new customers
    and rows that each take most of it answer StoreUnavailable once it has passed
    (not after twice as long), and nothing is recorded."""
    import time

    class Slow(AsyncEventWriter):
        async def store_keys(self, offered: Any) -> dict[str, str]:
            await asyncio.sleep(0.6)
            return await super().store_keys(offered)

        async def insert_new(self, events: Any) -> set[Any]:
            await asyncio.sleep(0.6)
            return await super().insert_new(events)

    fast = committer(pg_ledger, writers=1)
    slow = AsyncGroupCommitter(
        pg_ledger, [Slow(pg_ledger.recorder, fast._writers[0]._conninfo)], timeout_seconds=1.0
    )

    async def main() -> tuple[BaseException | None, float]:
        started = time.monotonic()
        try:
            await slow.submit(delivery("evt_slow"))
        except BaseException as exc:
            return exc, time.monotonic() - started
        finally:
            await slow.aclose()
        return None, time.monotonic() - started

    failed, took = asyncio.run(main())
    assert isinstance(failed, StoreUnavailable) and took < 1.4
    assert receipt_events(pg_ledger) == []
