"""Recording usage: each record checked against the plans file's metrics and the
allowed lateness, then appended through the group commit (the webhooks' one),
idempotent on the user's key; a repeated key answers the first record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from ledger.application import Ledger
from ledger.domain.catalog import Catalog
from ledger.domain.usage import Usage, UsageRecord
from ledger.intake import Committer

FUTURE_SLACK = 60  # seconds a record may be ahead of our clock
MAX_BATCH = 1000


class InvalidUsage(ValueError):
    """A record that cannot be accepted; the message names the field."""


class UsageRequest(Protocol):
    """A record as asked for, already of the right types: the API's parsed body
    is one as it is (a batch is 1,000 of them, not copied again)."""

    @property
    def metric(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def occurred_at(self) -> datetime | None: ...


class Metering:
    def __init__(
        self,
        ledger: Ledger,
        catalog: Catalog,
        committer: Committer,
        *,
        write_timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._catalog = catalog
        self._committer = committer
        self._write_timeout = write_timeout_seconds
        self._clock = clock
        self._metrics = {m.name: m for m in catalog.metrics}  # the catalog is frozen

    def check(
        self, user_id: str, request: UsageRequest, index: int | None = None, now: int | None = None
    ) -> Usage:
        """The record to append, or InvalidUsage naming the field (`records.<index>.`
        before it for a batch's). `now`: the time of the check (one for a batch)."""
        if now is None:
            now = int(self._clock())
        metric = self._metrics.get(request.metric)
        if metric is None:
            known = ", ".join(m.name for m in self._catalog.metrics)
            raise _invalid(index, f"metric: unknown metric {request.metric!r} (known: {known})")
        if not 0 <= request.quantity <= metric.max_quantity:
            raise _invalid(
                index, f"quantity: must be a whole number from 0 to {metric.max_quantity}"
            )
        occurred = now if request.occurred_at is None else int(request.occurred_at.timestamp())
        lateness = self._catalog.usage_allowed_lateness
        if occurred < now - lateness:
            raise _invalid(index, f"occurred_at: more than {lateness} seconds in the past")
        if occurred > now + FUTURE_SLACK:
            raise _invalid(index, f"occurred_at: more than {FUTURE_SLACK} seconds ahead")
        return Usage(user_id, metric.name, request.quantity, request.idempotency_key, occurred)

    async def record(self, user_id: str, request: UsageRequest) -> dict[str, object]:
        """Record one; returns the record (the first one, for a repeated key) and
        whether it was a duplicate."""
        return (await self._record([self.check(user_id, request)]))[0]

    async def record_batch(
        self, user_id: str, requests: Sequence[UsageRequest]
    ) -> list[dict[str, object]]:
        """All or none: every record is checked before any is appended, and they
        go into one transaction."""
        if len(requests) > MAX_BATCH:
            raise InvalidUsage(f"records: at most {MAX_BATCH} in a batch")
        now = int(self._clock())
        return await self._record([self.check(user_id, r, i, now) for i, r in enumerate(requests)])

    async def _record(self, usages: list[Usage]) -> list[dict[str, object]]:
        fresh = await self._committer.commit(usages, self._write_timeout)
        repeated = [u for u, new in zip(usages, fresh, strict=True) if not new]
        firsts = await asyncio.to_thread(self._first_records, repeated) if repeated else {}
        times: dict[int, str] = {}  # a batch's records mostly share their time
        return [
            _answer(u if new else firsts[u.aggregate_id], times, duplicate=not new)
            for u, new in zip(usages, fresh, strict=True)
        ]

    def _first_records(self, usages: list[Usage]) -> dict[object, Usage]:
        """The records already in the log under these keys, read back in one query."""
        firsts: dict[object, Usage] = {}
        ids = {usage.aggregate_id for usage in usages}
        for notification in self._ledger.recorder.notifications_of(ids):  # type: ignore[attr-defined]
            event = self._ledger.mapper.to_domain_event(notification)
            assert isinstance(event, UsageRecord.Recorded)
            firsts[event.originator_id] = Usage(
                event.user_id,
                event.metric,
                event.quantity,
                event.idempotency_key,
                event.occurred_at,
            )
        return firsts


def _invalid(index: int | None, message: str) -> InvalidUsage:
    return InvalidUsage(message if index is None else f"records.{index}.{message}")


def _answer(usage: Usage, times: dict[int, str], *, duplicate: bool) -> dict[str, object]:
    occurred_at = times.get(usage.occurred_at)
    if occurred_at is None:
        occurred_at = times[usage.occurred_at] = datetime.fromtimestamp(
            usage.occurred_at, UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": str(usage.aggregate_id),
        "metric": usage.metric,
        "quantity": usage.quantity,
        "idempotency_key": usage.idempotency_key,
        "occurred_at": occurred_at,
        "duplicate": duplicate,
    }
