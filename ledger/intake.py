"""Stage one of receiving a webhook: verify the signature, then record the
receipt. Receipts (and usage records) of concurrent requests are grouped into one
transaction (group commit); each request is answered only after its group is
committed. One seam, `Committer.commit`, for both writers: on SQLite a writer
thread commits the groups (`GroupCommitter`); on PostgreSQL they are written from
the event loop itself (`AsyncGroupCommitter`): no thread hop per request, and the
next group is on its way while the previous one commits."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.application import Ledger
from ledger.store.async_writer import AsyncEventWriter
from ledger.stripe import read_delivery
from ledger.stripe.signature import verify_signature

log = logging.getLogger("ledger.intake")


class StoreUnavailable(RuntimeError):
    """The log cannot be written to now: the sender should retry."""


class NewAggregate(Protocol):
    """Something to record as a new aggregate, idempotent on its id: a webhook
    delivery (its receipt) or a usage record. A second one with the same id is
    a duplicate, whether it meets the first in the log or in the same group."""

    @property
    def aggregate_id(self) -> UUID: ...

    def new_aggregate(self) -> Aggregate: ...


Outcomes = list[bool | BaseException]  # per item of an entry


class Committer:
    """The one seam of stage one's writers: new aggregates, idempotent on their
    ids, recorded in groups. `submit_together` keeps its items together, in one
    transaction (all or none), and answers one future (a thread's or the event
    loop's) for all of them: a batch of 1,000 usage records costs one future, not
    1,000. `submit` answers a future for one item; `commit` awaits."""

    def submit_together(
        self, items: Sequence[NewAggregate]
    ) -> Future[Outcomes] | asyncio.Future[Outcomes]:
        """Per item: True when recorded now, False when its id was in the log
        already (or earlier in the same group), or the exception that kept it
        out; the future fails when the whole group does."""
        raise NotImplementedError

    def submit(self, item: NewAggregate) -> Future[bool] | asyncio.Future[bool]:
        """One item, in a group of whatever else waits, with a future of its own."""
        together = self.submit_together([item])
        one: Any = Future() if isinstance(together, Future) else together.get_loop().create_future()
        together.add_done_callback(lambda done: _fan_out(done, [one]))  # type: ignore[arg-type]
        return one

    async def commit(self, items: Sequence[NewAggregate], timeout_seconds: float) -> list[bool]:
        """Record `items` in one transaction; returns once it is committed, per
        item True when recorded now, False when its id was in the log already (or
        earlier in the same group). Raises StoreUnavailable when the log fails or
        does not answer within the timeout (if the write still lands, a retry is
        answered as a duplicate)."""
        if not items:
            return []
        together = self.submit_together(items)
        pending = (
            together if isinstance(together, asyncio.Future) else asyncio.wrap_future(together)
        )
        try:
            outcomes = await asyncio.wait_for(asyncio.shield(pending), timeout_seconds)
        except TimeoutError:
            raise StoreUnavailable("the log did not answer in time") from None
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        """What a thread closes (nothing, for a writer on the event loop)."""

    async def _record(self, writer: AsyncEventWriter, items: list[NewAggregate]) -> set[UUID]:
        """New customers' keys first (one round trip), then the group's rows;
        answers the ids already in the log."""
        personal = self._ledger.personal
        if missing := personal.missing_keys(items):
            personal.accept(await writer.store_keys(personal.offer(missing)))
        return await writer.insert_new(self._ledger.stored_events(items))

    async def aclose(self) -> None:
        """What the event loop closes (nothing, for a writer thread)."""


class Intake:
    """Stage one as one call: a delivery's body and its Stripe-Signature header in,
    its receipt committed (or a refusal raised) out."""

    def __init__(
        self,
        committer: Committer,
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
        signed_at = verify_signature(body, signature_header, self._secrets, self._tolerance)
        delivery = read_delivery(body, signed_at)
        return (await self._committer.commit([delivery], self._write_timeout))[0]


def _fan_out(together: Future[Outcomes] | asyncio.Future[Outcomes], each: list[Any]) -> None:
    """An entry's outcomes, item by item, to futures of their own."""
    if together.cancelled():
        for future in each:
            future.cancel()
        return
    error = together.exception()
    outcomes: Outcomes = [error] * len(each) if error is not None else together.result()
    for future, outcome in zip(each, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_Item = tuple[Sequence[NewAggregate], Future]  # an entry: items kept together, one future


class GroupCommitter(Committer):
    """One writer thread; whatever arrived while it was writing goes into its next
    transaction. `submit_together` answers a future of per-item outcomes: True when
    recorded now, False when the aggregate id was already in the log (a duplicate),
    or StoreUnavailable. Its items go into one transaction."""

    def __init__(
        self, ledger: Ledger, *, max_group: int = 256, on_recorded: Callable[[], None] | None = None
    ) -> None:
        self._ledger = ledger
        self._max_group = max_group
        self._on_recorded = on_recorded or (lambda: None)
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit_together(self, items: Sequence[NewAggregate]) -> Future[Outcomes]:
        future: Future[Outcomes] = Future()
        if not items:
            future.set_result([])
            return future
        self._queue.put([(items, future)])
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = list(first)
            size = sum(len(items) for items, _ in group)
            while size < self._max_group:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._commit(group)
                    return
                group.extend(entry)
                size += sum(len(items) for items, _ in entry)
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        # A second item of one id inside the group is a duplicate of the first.
        firsts: dict[UUID, NewAggregate] = {}
        for items, _ in group:
            for item in items:
                firsts.setdefault(item.aggregate_id, item)
        try:
            results = self._record(list(firsts.values()))
        except Exception as exc:  # whatever it is, the writer thread carries on
            if not isinstance(exc, PersistenceError):
                log.exception("recording %d new aggregates failed", len(firsts))
            self._fail(group, exc)
            return
        for items, future in group:
            outcomes: Outcomes = []
            for item in items:
                outcome = results[item.aggregate_id]
                if outcome is True and firsts[item.aggregate_id] is not item:
                    outcome = False
                outcomes.append(outcome)
            future.set_result(outcomes)
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


_Pending = tuple[Sequence[NewAggregate], "asyncio.Future[Outcomes]"]  # an entry


class AsyncGroupCommitter(Committer):
    """Stage one's writer on PostgreSQL, on the event loop. `submit_together`
    answers an asyncio future, as `GroupCommitter.submit_together` answers a
    thread's (per item True: recorded now, False: a duplicate; or StoreUnavailable);
    its items go into one group (one transaction), never split. Each writer (a connection) takes
    everything that waits when it is free; with two, one group is being committed
    while the next is sent and waits for the log's lock inside PostgreSQL, so
    neither Python nor the network sits between two commits. Rows already in the
    log are skipped by the insert itself (no retry one by one, as the thread's
    writer needs after an IntegrityError)."""

    def __init__(
        self,
        ledger: Ledger,
        writers: Sequence[AsyncEventWriter],
        *,
        max_group: int = 256,
        timeout_seconds: float = 10.0,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._idle = list(writers)
        self._writers = list(writers)
        self._max_group = max_group
        self._timeout = timeout_seconds
        self._on_recorded = on_recorded or (lambda: None)
        self._pending: deque[_Pending] = deque()  # entries: kept together
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing: set[UUID] = set()  # ids of the groups in flight
        self._scheduled = False

    def submit_together(self, items: Sequence[NewAggregate]) -> asyncio.Future[Outcomes]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcomes] = loop.create_future()
        if not items:
            future.set_result([])
            return future
        self._pending.append((items, future))
        if not self._scheduled and self._idle:
            # after the callbacks ready now: requests read in one go share a group
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._pending and self._idle:
            group = self._next_group()
            if not group:
                return  # what waits, waits for a group in flight
            writer = self._idle.pop()
            ids = {item.aggregate_id for items, _ in group for item in items}
            self._writing |= ids
            task = asyncio.get_running_loop().create_task(self._commit(writer, group, ids))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_group(self) -> list[_Pending]:
        """Entries in order, whole, up to `max_group` items (an entry bigger than
        that goes alone). An entry with an id that a group in flight is writing
        waits for it: of two groups on two connections either may commit first,
        and the item submitted first must be the one recorded."""
        group: list[_Pending] = []
        held: list[_Pending] = []
        size = 0
        while self._pending:
            entry = self._pending[0]
            if group and size + len(entry[0]) > self._max_group:
                break
            self._pending.popleft()
            if self._writing and any(item.aggregate_id in self._writing for item in entry[0]):
                held.append(entry)
            else:
                group.append(entry)
                size += len(entry[0])
        self._pending.extendleft(reversed(held))
        return group

    async def _commit(
        self, writer: AsyncEventWriter, group: list[_Pending], ids: set[UUID]
    ) -> None:
        try:
            await self._write(writer, group)
        finally:
            self._writing -= ids
            self._idle.append(writer)
            self._dispatch()

    async def _write(self, writer: AsyncEventWriter, group: list[_Pending]) -> None:
        # A second item of one id inside the group is answered as a duplicate.
        firsts: dict[UUID, NewAggregate] = {}
        for items, _ in group:
            for item in items:
                firsts.setdefault(item.aggregate_id, item)
        try:  # one deadline for the group, keys and rows together
            skipped = await asyncio.wait_for(
                self._record(writer, list(firsts.values())), self._timeout
            )
        except Exception as exc:  # whatever it is, the writer carries on
            if not isinstance(exc, (PersistenceError, TimeoutError, OSError)) and not (
                type(exc).__module__.startswith("psycopg")
            ):
                log.exception("recording %d new aggregates failed", len(firsts))
            error = StoreUnavailable(type(exc).__name__)
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for items, future in group:
            if not future.done():
                future.set_result(
                    [
                        firsts[item.aggregate_id] is item and item.aggregate_id not in skipped
                        for item in items
                    ]
                )
        if len(skipped) < len(firsts):
            self._on_recorded()

    async def aclose(self) -> None:
        """Wait for the groups in hand, then close the connections."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._timeout)
        for writer in self._writers:
            await writer.close()
