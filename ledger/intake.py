"""Stage one of receiving a webhook: verify the signature, then record the
receipt. Receipts (and usage records) of concurrent requests are grouped into one
transaction (group commit); each request is answered only after its group is
committed."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.application import Ledger
from ledger.stripe import read_delivery
from ledger.stripe.signature import verify_signature

log = logging.getLogger("ledger.intake")


class StoreUnavailable(RuntimeError):
    """The log cannot be written to now: the sender should retry."""


class Intake:
    """Stage one as one call: a delivery's body and its Stripe-Signature header in,
    its receipt committed (or a refusal raised) out."""

    def __init__(
        self,
        committer: GroupCommitter,
        secrets: Sequence[str],
        *,
        tolerance_seconds: int,
        write_timeout_seconds: float,
    ) -> None:
        self._committer = committer
        self._secrets = list(secrets)
        self._tolerance = tolerance_seconds
        self._write_timeout = write_timeout_seconds

    async def receive(self, body: bytes, signature_header: str | None) -> bool:
        """Verify, read and record one delivery; returns once its receipt is
        committed: True when recorded now, False when it was in the log already.
        Raises InvalidSignature, NotAnEvent, or StoreUnavailable when the log does
        not answer within the write timeout (if the write still lands, Stripe's
        retry is answered as a duplicate)."""
        verify_signature(body, signature_header, self._secrets, self._tolerance)
        pending = asyncio.wrap_future(self._committer.submit(read_delivery(body)))
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self._write_timeout)
        except TimeoutError:
            raise StoreUnavailable("the log did not answer in time") from None


class NewAggregate(Protocol):
    """Something to record as a new aggregate, idempotent on its id: a webhook
    delivery (its receipt) or a usage record. A second one with the same id is
    a duplicate, whether it meets the first in the log or in the same group."""

    @property
    def aggregate_id(self) -> UUID: ...

    def new_aggregate(self) -> Aggregate: ...


_Item = tuple[NewAggregate, Future]


class GroupCommitter:
    """One writer thread; whatever arrived while it was writing goes into its next
    transaction. `submit` answers a future: True when recorded now, False when the
    aggregate id was already in the log (a duplicate), or StoreUnavailable.
    `submit_all` keeps its items together: they go into one transaction."""

    def __init__(
        self, ledger: Ledger, *, max_group: int = 256, on_recorded: Callable[[], None] | None = None
    ) -> None:
        self._ledger = ledger
        self._max_group = max_group
        self._on_recorded = on_recorded or (lambda: None)
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, item: NewAggregate) -> Future:
        future: Future = Future()
        self._queue.put([(item, future)])
        return future

    def submit_all(self, items: Sequence[NewAggregate]) -> list[Future]:
        entry: list[_Item] = [(item, Future()) for item in items]
        if entry:
            self._queue.put(entry)
        return [future for _, future in entry]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = list(first)
            while len(group) < self._max_group:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._commit(group)
                    return
                group.extend(entry)
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        # A second item of one id inside the group waits for the first.
        firsts: dict[UUID, _Item] = {}
        repeats: list[_Item] = []
        for item in group:
            if item[0].aggregate_id in firsts:
                repeats.append(item)
            else:
                firsts[item[0].aggregate_id] = item
        items = list(firsts.values())
        try:
            results = self._record([d for d, _ in items])
        except Exception as exc:  # whatever it is, the writer thread carries on
            if not isinstance(exc, PersistenceError):
                log.exception("recording %d new aggregates failed", len(items))
            self._fail(group, exc)
            return
        for item, future in items:
            _resolve(future, results[item.aggregate_id])
        for item, future in repeats:
            outcome = results[item.aggregate_id]
            _resolve(future, outcome if isinstance(outcome, BaseException) else False)
        if any(r is True for r in results.values()):
            self._on_recorded()

    def _record(self, items: list[NewAggregate]) -> dict[UUID, bool | BaseException]:
        """All in one transaction (True: recorded now, False: a duplicate). When
        some are in the log already (Stripe's retries, a repeated key), the others
        still go in one transaction; only a race with another writer makes it one
        each."""
        try:
            self._ledger.record(items)
            return {i.aggregate_id: True for i in items}
        except IntegrityError:
            pass
        known = self._ledger.recorder.existing([i.aggregate_id for i in items])
        results: dict[UUID, bool | BaseException] = {i.aggregate_id: False for i in items}
        fresh = [i for i in items if i.aggregate_id not in known]
        try:
            if fresh:
                self._ledger.record(fresh)
            results.update(dict.fromkeys((i.aggregate_id for i in fresh), True))
        except IntegrityError:
            results.update({i.aggregate_id: self._record_one(i) for i in fresh})
        return results

    def _record_one(self, item: NewAggregate) -> bool | BaseException:
        try:
            self._ledger.record([item])
            return True
        except IntegrityError:
            return False
        except PersistenceError as exc:
            return StoreUnavailable(str(exc))

    @staticmethod
    def _fail(group: list[_Item], exc: Exception) -> None:
        error = StoreUnavailable(f"{type(exc).__name__}")
        for _, future in group:
            future.set_exception(error)


def _resolve(future: Future, result: bool | BaseException) -> None:
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
