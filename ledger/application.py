"""The ledger: records receipts (stage one) and, following its own log, turns
each receipt into domain events exactly once (stage two)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    LRUCache,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Mapper,
    Notification,
    PersistenceError,
    StoredEvent,
    Tracking,
)
from eventsourcing.system import Follower
from eventsourcing.utils import get_topic

from ledger.domain.clock import Tick
from ledger.domain.receipt import Delivery, Outcome, Receipt
from ledger.domain.usage import Usage, UsageRecord
from ledger.personal import PersonalData, Plain
from ledger.store.library import LeanMapper, collect, record_and_notify, timestamp_json
from ledger.store.receipt_rows import ReceiptRows
from ledger.store.transcodings import PriceAsDict
from ledger.store.usage_rows import UsageRows
from ledger.stripe.translator import Payload, aggregates_named, read_event, translate

log = logging.getLogger("ledger")
A = TypeVar("A", bound=Aggregate)


class NewAggregate(Protocol):
    """What `record` appends: a new aggregate, with its events."""

    def new_aggregate(self) -> Aggregate: ...


class ReceiptNotFound(LookupError):
    pass


class AggregateCache:
    """The unit of work of some deliveries: what they loaded and created. Loads
    from `recent` (what stage two saved last, as saved) before the store. Changes
    are made to those very objects: whoever uses `recent` must `forget` it when
    the unit of work is not committed."""

    def __init__(
        self,
        repository: Repository,
        recent: LRUCache[UUID, Aggregate] | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        self._repository = repository
        self._personal = personal or Plain()
        self._recent = recent
        self._aggregates: dict[UUID, Aggregate] = {}
        self._touched: dict[UUID, Aggregate] = {}  # handed out since `take_changed`
        self._absent: set[UUID] = set()  # known to have no events yet

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id not in self._aggregates:
            if aggregate_id in self._absent:
                return None
            try:
                self._aggregates[aggregate_id] = self._load(aggregate_id)
            except AggregateNotFoundError:
                return None
        aggregate = self._touched[aggregate_id] = self._aggregates[aggregate_id]
        assert isinstance(aggregate, cls)
        return aggregate

    def _load(self, aggregate_id: UUID) -> Aggregate:
        if self._recent is not None:
            try:
                return self._recent.get(aggregate_id)
            except KeyError:
                pass
        return self._repository.get(aggregate_id)

    def prefetch(self, ids: set[UUID], existing: Callable[[list[UUID]], set[UUID]]) -> None:
        """Ask the store once which of `ids` (those not in hand) have events: `get`
        answers None for the others without a query each."""
        unknown = [i for i in ids if i not in self._aggregates and not self._kept(i)]
        self._absent = set(unknown) - existing(unknown)

    def _kept(self, aggregate_id: UUID) -> bool:
        if self._recent is None:
            return False
        try:
            self._recent.get(aggregate_id)
        except KeyError:
            return False
        return True

    def protect(self, subject: str, value: str | None) -> str | None:
        """A personal value, as it is to be stored: encrypted with the subject's key."""
        return self._personal.protect(subject, value)

    def add(self, aggregate: Aggregate) -> None:
        self._aggregates[aggregate.id] = self._touched[aggregate.id] = aggregate

    def remember(self) -> None:
        """After a commit: what was saved is what the store holds now."""
        if self._recent is not None:
            for aggregate in self._aggregates.values():
                self._recent.put(aggregate.id, aggregate)

    def changed(self) -> list[Aggregate]:
        """Aggregates with changes not yet taken (only those handed out since the
        last `take_changed` can have any: a batch stays linear in its size)."""
        return [a for a in self._touched.values() if a.pending_events]

    def take_changed(self) -> list[Aggregate]:
        changed = self.changed()
        self._touched.clear()
        return changed


class Ledger(Follower[UUID]):
    name = "Ledger"
    topics = (get_topic(Receipt.Received),)
    pull_section_size = 500
    batch_size = 200  # receipts per stage-two transaction
    log_section_size = 500

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        retry_attempts: int = 5,
        retry_base_seconds: float = 2.0,
        cache_size: int = 10_000,
    ) -> None:
        super().__init__(env)
        # Stage two loads the same customers and subscriptions again and again. It
        # keeps what it saved; a save that finds the store moved on (another process
        # wrote first) fails, and then this is cleared (`forget`).
        self._cache_size = cache_size
        self._recent: LRUCache[UUID, Aggregate] | None = None
        self.forget()
        self.retry_attempts = retry_attempts
        self.retry_base_seconds = retry_base_seconds
        self.follow(self.name, self.notification_log)
        self._pending_retries: set[UUID] = set()  # receipts that failed, by id
        self._failure_cursor = 0
        self.personal: PersonalData = Plain()  # open_ledger gives the real one
        self._last_tick = 0  # the start of the last period ticked by this process

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(self.construct_transcoder(), LeanMapper)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(PriceAsDict())

    # --- stage one ----------------------------------------------------------------

    def record(self, items: Sequence[NewAggregate]) -> list[int]:
        """Append new aggregates (receipts of deliveries, usage records) in one
        transaction; raises IntegrityError if any of them is already recorded
        (then nothing of this call is). Returns their positions in the log.
        A delivery's body about a customer is stored encrypted with that
        customer's key, whichever path records it; usage records carry no
        personal data. The rows are `stored_events`, as the writer on the event
        loop inserts them (the library's `save` would build each aggregate and
        event only to write the same bytes)."""
        return list(self.recorder.insert_events(self.stored_events(items)) or [])

    def stored_events(self, items: Sequence[NewAggregate]) -> list[StoredEvent]:
        """New aggregates' events as `save` would store them: the one place stage
        one (`record`, or the writer on the event loop, which inserts them itself)
        turns what it records into rows of the log. A delivery's receipt and a
        usage record are one row each, written directly (`ReceiptRows`,
        `UsageRows`: the mapper's bytes, no event or aggregate built).
        Deliveries' bodies about a customer are encrypted here, whichever writer
        inserts them."""
        items = self.personal.protect_deliveries(items)
        # One time for the receipts and usage records of a call, written as JSON once.
        now = timestamp_json(UsageRecord.Recorded.create_timestamp())
        usage, receipts = UsageRows(self.mapper, now), ReceiptRows(self.mapper, now)
        rows = []
        for i in items:
            if type(i) is Delivery:
                rows.append(receipts.row(i))
            elif isinstance(i, Usage):
                rows.append(usage.row(i))
            else:
                events = i.new_aggregate().collect_events()
                rows.extend(self.mapper.to_stored_event(e) for e in events)
        return rows

    def receipt(self, stripe_event_id: str) -> Receipt:
        try:
            return self.repository.get(Receipt.create_id(stripe_event_id))
        except AggregateNotFoundError:
            raise ReceiptNotFound(stripe_event_id) from None

    # --- stage two ----------------------------------------------------------------

    def process_new(self) -> None:
        """Process receipts not yet processed, each exactly once: the tracking
        position is written in the transaction that records what they produced.
        Another process that got there first makes ours roll back; we move on."""
        while True:
            start = self.recorder.max_tracking_id(self.name) or 0
            batch = self.recorder.read_notifications(start + 1, self.batch_size, None, self.topics)
            if not batch:
                return
            try:
                self._process_batch(batch)
            except IntegrityError:
                log.debug("another processor wrote first; pulling again")
                self.forget()
                return
            if len(batch) < self.batch_size:
                return

    def _process_batch(self, notifications: Sequence[Notification]) -> None:
        """Many receipts in one transaction, their events in receipt order, the
        tracking position (the last receipt's) written with them. When one receipt
        raises, the batch is dropped and each receipt gets a transaction of its
        own (the library's `pull_and_process` and `policy`), so that only that one
        is marked failed."""
        processing = ProcessingEvent[UUID](tracking=Tracking(self.name, notifications[-1].id))
        cache = AggregateCache(self.repository, self._recent, self.personal)
        try:
            receipts = [self.mapper.to_domain_event(n).mutate(None) for n in notifications]
            self.personal.recall([r.payload for r in receipts])
            events = [read_event(self.personal.reveal(r.payload)) for r in receipts]
            named = {i for event in events for i in aggregates_named(event)}
            cache.prefetch(named, self.recorder.existing)  # type: ignore[attr-defined]
            for receipt, event in zip(receipts, events, strict=True):
                receipt.settle(self._translate(cache, event))
                collect(processing, [*cache.take_changed(), receipt])
        except Exception as exc:
            self.forget()  # what was changed in memory will not be saved
            if isinstance(exc, PersistenceError):
                raise
            self.pull_and_process(self.name, stop=notifications[-1].id)  # isolate the bad one
            return
        try:
            with self.processing_lock:
                record_and_notify(self, processing)
        except BaseException:
            self.forget()
            raise
        cache.remember()

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        if isinstance(domain_event, Receipt.Received):
            receipt = domain_event.mutate(None)
            assert isinstance(receipt, Receipt)
            processing_event.collect_events(*self._attempt(receipt))

    @staticmethod
    def _translate(cache: AggregateCache, payload: Payload) -> Outcome:
        outcome = translate(cache, payload)
        if outcome is Outcome.APPLIED and not cache.changed():
            outcome = Outcome.UNCHANGED
        return outcome

    def _attempt(self, receipt: Receipt, now: float | None = None) -> list[Aggregate]:
        """Translate one receipt. Returns the aggregates to save with it: all its
        changes and its outcome, or, when translating raised, only the failure."""
        cache = AggregateCache(self.repository, personal=self.personal)
        try:
            outcome = self._translate(cache, self.personal.reveal(receipt.payload))
        except PersistenceError:
            raise  # the store, not the receipt: retried as a whole, position unmoved
        except Exception as exc:
            receipt.fail(
                f"{type(exc).__name__}: {exc}",
                max_attempts=self.retry_attempts,
                base_delay=self.retry_base_seconds,
                now=time.time() if now is None else now,
            )
            level = logging.ERROR if receipt.is_dead else logging.WARNING
            log.log(
                level,
                "receipt %s (%s) failed, attempt %d%s: %s",
                receipt.stripe_event_id,
                receipt.event_type,
                receipt.attempts,
                ", now dead" if receipt.is_dead else "",
                receipt.last_error,
            )
            return [receipt]
        receipt.settle(outcome)
        return [*cache.changed(), receipt]

    # --- the log's clock ------------------------------------------------------------

    def tick(self, period: int, now: float | None = None) -> bool:
        """Record the tick of the period `now` falls in, unless it is recorded (here
        or by another process: the tick's id is its period's start). True when this
        call recorded it."""
        tick = Tick.of_period(time.time() if now is None else now, period)
        if tick.at <= self._last_tick:
            return False
        try:
            self.save(tick)
        except IntegrityError:
            recorded = False
        else:
            recorded = True
        self._last_tick = tick.at
        return recorded

    # --- retries ------------------------------------------------------------------

    def retry_due(self, now: float | None = None) -> int:
        """Retry failed receipts whose back-off has passed. Returns how many were tried."""
        now = time.time() if now is None else now
        self._scan_failures()
        tried = 0
        for receipt_id in list(self._pending_retries):
            receipt = self.repository.get(receipt_id)
            if receipt.outcome is not Outcome.FAILED:
                self._pending_retries.discard(receipt_id)
                continue
            if receipt.retry_at is not None and receipt.retry_at <= now:
                self._save_attempt(receipt, now)
                tried += 1
        return tried

    def retry(self, stripe_event_id: str) -> Receipt:
        """An operator's retry of a failed or dead receipt, after a fix."""
        receipt = self.receipt(stripe_event_id)
        if receipt.outcome in (Outcome.FAILED, Outcome.DEAD):
            self._save_attempt(receipt, time.time())
        return self.receipt(stripe_event_id)

    def dead_receipts(self) -> list[Receipt]:
        seen: dict[UUID, Receipt] = {}
        for notification in self._select(get_topic(Receipt.DeadLettered), start=1):
            if notification.originator_id not in seen:
                seen[notification.originator_id] = self.repository.get(notification.originator_id)
        return [r for r in seen.values() if r.is_dead]

    def _save_attempt(self, receipt: Receipt, now: float) -> None:
        self.forget()
        try:
            self.save(*self._attempt(receipt, now))
        except IntegrityError:
            log.info("receipt %s was retried elsewhere at the same time", receipt.stripe_event_id)
            self.forget()

    def forget(self) -> None:
        """Drop what stage two keeps in memory: another writer has saved some of it,
        or a batch that changed it was not saved. (A new cache: the library's
        `LRUCache.clear` empties its queue but not its dict.)"""
        self._recent = LRUCache(maxsize=self._cache_size) if self._cache_size else None

    def _scan_failures(self) -> None:
        """Learn the failed attempts recorded since the last scan. The cursor moves
        to the head read first, failures or not (notification ids are committed in
        order, so none can appear at or below it later): before, with no failure
        ever, every scan read the whole log from its start."""
        head = self.recorder.max_notification_id() or 0
        topic = get_topic(Receipt.AttemptFailed)
        for notification in self._select(topic, self._failure_cursor + 1, head):
            event = self.mapper.to_domain_event(notification)
            assert isinstance(event, Receipt.AttemptFailed)
            if event.retry_at is not None:
                self._pending_retries.add(event.originator_id)
        self._failure_cursor = max(self._failure_cursor, head)

    def _select(self, topic: str, start: int, stop: int | None = None) -> Iterable[Any]:
        """The log's events of `topic` from `start` to `stop` (None: the head), 500 a read."""
        while True:
            batch = self.recorder.read_notifications(start, 500, stop, [topic])
            yield from batch
            if len(batch) < 500:
                return
            start = batch[-1].id + 1
