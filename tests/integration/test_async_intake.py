"""Stage one's writer on the event loop (PostgreSQL): every delivery recorded once,
byte for byte, in groups; duplicates (in a group, in the log, from another
process at the same moment) answered False; a store that fails answers
StoreUnavailable and the writer goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ledger.application import Ledger
from ledger.intake import AsyncGroupCommitter, StoreUnavailable
from ledger.opening import open_ledger
from ledger.store.async_writer import AsyncEventWriter
from ledger.store.url import Store
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


def test_concurrent_deliveries_are_recorded_once_each_in_groups(pg_ledger: Ledger) -> None:
    ids = [f"evt_{i}" for i in range(300)]
    offered = [delivery(e) for e in ids] + [delivery(e) for e in ids[::7]]  # some twice

    async def main() -> list[bool]:
        writer = committer(pg_ledger)
        try:
            return list(await asyncio.gather(*(writer.submit(d) for d in offered)))
        finally:
            await writer.aclose()

    answers = asyncio.run(main())
    assert answers[: len(ids)] == [True] * len(ids)  # the first of each, in one go
    assert answers[len(ids) :] == [False] * len(ids[::7])
    stored = receipt_events(pg_ledger)
    assert sorted(r.stripe_event_id for r in stored) == sorted(ids)
    by_id = {d.stripe_event_id: d.payload for d in offered}
    assert all(r.payload == by_id[r.stripe_event_id] for r in stored)  # byte for byte


def test_a_duplicate_in_the_log_and_in_the_group_is_answered_false(pg_ledger: Ledger) -> None:
    pg_ledger.record([delivery("evt_0")])  # Stripe's retry arrives with new ones

    async def main() -> list[bool]:
        writer = committer(pg_ledger, writers=1)
        try:
            names = ("evt_1", "evt_0", "evt_2", "evt_1")
            return list(await asyncio.gather(*(writer.submit(delivery(e)) for e in names)))
        finally:
            await writer.aclose()

    assert asyncio.run(main()) == [True, False, True, False]
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
