"""Stage one of receiving a webhook: verify the signature, then record the
receipt. Receipts of concurrent requests are grouped into one transaction (group
commit); each request is answered only after its group is committed. On SQLite a
writer thread commits the groups (`GroupCommitter`); on PostgreSQL they are
written from the event loop itself (`AsyncGroupCommitter`): no thread hop per
request, and the next group is on its way while the previous one commits."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.application import Ledger
from ledger.domain.receipt import Delivery, Receipt
from ledger.store.async_writer import AsyncEventWriter
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


_Item = tuple[Delivery, Future]


class GroupCommitter:
    """One writer thread; whatever arrived while it was writing goes into its next
    transaction. `submit` answers a future: True when recorded now, False when the
    event id was already in the log (a duplicate), or StoreUnavailable."""

    def __init__(
        self, ledger: Ledger, *, max_group: int = 256, on_recorded: Callable[[], None] | None = None
    ) -> None:
        self._ledger = ledger
        self._max_group = max_group
        self._on_recorded = on_recorded or (lambda: None)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, delivery: Delivery) -> Future:
        future: Future = Future()
        self._queue.put((delivery, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._commit(group)
                    return
                group.append(item)
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        # A second delivery of one id inside the group waits for the first.
        firsts: dict[str, _Item] = {}
        repeats: list[_Item] = []
        for item in group:
            if item[0].stripe_event_id in firsts:
                repeats.append(item)
            else:
                firsts[item[0].stripe_event_id] = item
        items = list(firsts.values())
        try:
            results = self._record([d for d, _ in items])
        except Exception as exc:  # whatever it is, the writer thread carries on
            if not isinstance(exc, PersistenceError):
                log.exception("recording %d receipts failed", len(items))
            self._fail(group, exc)
            return
        for delivery, future in items:
            _resolve(future, results[delivery.stripe_event_id])
        for delivery, future in repeats:
            outcome = results[delivery.stripe_event_id]
            _resolve(future, outcome if isinstance(outcome, BaseException) else False)
        if any(r is True for r in results.values()):
            self._on_recorded()

    def _record(self, deliveries: list[Delivery]) -> dict[str, bool | BaseException]:
        """All in one transaction (True: recorded now, False: a duplicate). When
        some are in the log already (Stripe's retries), the others still go in one
        transaction; only a race with another writer makes it one each."""
        try:
            self._ledger.record(deliveries)
            return {d.stripe_event_id: True for d in deliveries}
        except IntegrityError:
            pass
        known = self._ledger.recorder.existing(
            [Receipt.create_id(d.stripe_event_id) for d in deliveries]
        )
        results: dict[str, bool | BaseException] = {d.stripe_event_id: False for d in deliveries}
        fresh = [d for d in deliveries if Receipt.create_id(d.stripe_event_id) not in known]
        try:
            if fresh:
                self._ledger.record(fresh)
            results.update(dict.fromkeys((d.stripe_event_id for d in fresh), True))
        except IntegrityError:
            results.update({d.stripe_event_id: self._record_one(d) for d in fresh})
        return results

    def _record_one(self, delivery: Delivery) -> bool | BaseException:
        try:
            self._ledger.record([delivery])
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


_Pending = tuple[Delivery, "asyncio.Future[bool]"]


class AsyncGroupCommitter:
    """Stage one's writer on PostgreSQL, on the event loop. `submit` answers an
    asyncio future, as `GroupCommitter.submit` answers a thread's (True: recorded
    now, False: a duplicate, or StoreUnavailable). Each writer (a connection) takes
    everything that waits when it is free; with two, one group is being committed
    while the next is sent and waits for the log's lock inside PostgreSQL, so
    neither Python nor the network sits between two commits."""

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
        self._pending: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def submit(self, delivery: Delivery) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((delivery, future))
        if not self._scheduled and self._idle:
            # after the callbacks ready now: requests read in one go share a group
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._pending and self._idle:
            writer = self._idle.pop()
            count = min(len(self._pending), self._max_group)
            group = [self._pending.popleft() for _ in range(count)]
            task = asyncio.get_running_loop().create_task(self._commit(writer, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _commit(self, writer: AsyncEventWriter, group: list[_Pending]) -> None:
        try:
            await self._write(writer, group)
        finally:
            self._idle.append(writer)
            self._dispatch()

    async def _write(self, writer: AsyncEventWriter, group: list[_Pending]) -> None:
        # A second delivery of one id inside the group gets the first one's answer.
        firsts: dict[str, Delivery] = {}
        for delivery, _ in group:
            firsts.setdefault(delivery.stripe_event_id, delivery)
        try:
            receipts = self._ledger.receipts(list(firsts.values()))
            stored = self._ledger.stored_events(receipts)
            inserted = await asyncio.wait_for(writer.insert_new(stored), self._timeout)
        except Exception as exc:  # whatever it is, the writer carries on
            if not isinstance(exc, (PersistenceError, TimeoutError, OSError)) and not (
                type(exc).__module__.startswith("psycopg")
            ):
                log.exception("recording %d receipts failed", len(group))
            error = StoreUnavailable(type(exc).__name__)
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        recorded = {r.stripe_event_id for r in receipts if r.id in inserted}
        for delivery, future in group:
            first = firsts.get(delivery.stripe_event_id) is delivery
            if not future.done():
                future.set_result(first and delivery.stripe_event_id in recorded)
        if recorded:
            self._on_recorded()

    async def aclose(self) -> None:
        """Wait for the groups in hand, then close the connections."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._timeout)
        for writer in self._writers:
            await writer.close()
