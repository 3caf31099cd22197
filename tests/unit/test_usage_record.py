"""A usage record's id and its event, made directly (the batch path) or by the
aggregate: the same event but for the time."""

from __future__ import annotations

import dataclasses

from ledger.domain.usage import Usage, UsageRecord


def test_the_direct_event_is_the_aggregates() -> None:
    usage = Usage("user_1767225600_abcdefghij", "ai_requests", 3, "k-1", 1_767_225_600)
    [made] = usage.new_aggregate().collect_events()
    [direct] = usage.new_events()
    assert type(direct) is type(made) is UsageRecord.Recorded
    assert dataclasses.replace(direct, timestamp=made.timestamp) == made
    assert usage.aggregate_id == UsageRecord.create_id(usage.user_id, "k-1")
    assert UsageRecord.create_id("user_a", "k") != UsageRecord.create_id("user_b", "k")
