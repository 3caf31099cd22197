"""A usage record's id and its event, made directly (the batch path) or by the
aggregate: the same event but for the time."""

from __future__ import annotations

import dataclasses
import json
from uuid import uuid5

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.application import Ledger
from ledger.domain.ids import NAMESPACE, name_uuid
from ledger.domain.usage import Usage, UsageRecord


def test_the_direct_event_is_the_aggregates() -> None:
    usage = Usage("user_1767225600_abcdefghij", "ai_requests", 3, "k-1", 1_767_225_600)
    [made] = usage.new_aggregate().collect_events()
    [direct] = usage.new_events()
    assert type(direct) is type(made) is UsageRecord.Recorded
    assert dataclasses.replace(direct, timestamp=made.timestamp) == made
    assert usage.aggregate_id == UsageRecord.create_id(usage.user_id, "k-1")
    assert UsageRecord.create_id("user_a", "k") != UsageRecord.create_id("user_b", "k")


@pytest.mark.parametrize(
    "key", ["k-1", 'quote " and \\ backslash', "ünïcödé ✓ 😀", "tab\tnew\nline\x01", "x" * 255]
)
def test_the_row_written_directly_is_the_mappers(key: str) -> None:
    """The stored topic and state of a usage record are what the library's mapper
    writes for its event, byte for byte (and it reads back as that event)."""
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    usage = Usage("user_1767225600_abcdefghij", "ai_requests", 12, key, 1_767_225_600)
    [event] = usage.new_events()
    [row] = ledger.stored_events([usage])
    row = dataclasses.replace(row, state=row.state.replace(_time_of(row), _time_of_event(event)))
    assert row == ledger.mapper.to_stored_event(event)
    assert ledger.mapper.to_domain_event(row) == event


def _time_of(row: StoredEvent) -> bytes:
    return json.loads(row.state)["timestamp"]["_data_"].encode()


def _time_of_event(event: UsageRecord.Recorded) -> bytes:
    return event.timestamp.isoformat().encode()


@pytest.mark.parametrize("name", ["usage:user_1:k-1", "stripe:evt:evt_1", "ü ✓ 😀", "", "x" * 999])
def test_name_uuid_is_uuid5(name: str) -> None:
    made = name_uuid(name)
    assert made == uuid5(NAMESPACE, name)
    assert (str(made), made.version, hash(made)) == (
        str(uuid5(NAMESPACE, name)),
        5,
        hash(uuid5(NAMESPACE, name)),
    )
