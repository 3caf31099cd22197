"""Keeps projections up to date by following the log, and rebuilds them.

A pull loop over the log's `select_notifications` (filtered by each projection's
topics) applies many events per transaction, with the tracking position written
once per batch, first, so that a second runner of the same projection waits on
it and then rolls back instead of applying anything twice. (The library's
`ProjectionRunner` follows PostgreSQL only; this loop serves both stores.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.loop import WakeableLoop
from projections.base import GenerationChanged, SqlProjection, apply_batch, published_generation

log = logging.getLogger("projections")
Progress = Callable[[int, int], None]  # (events done in this call, position)


class Catchup:
    """Brings projections up to the head of the log."""

    def __init__(
        self, ledger: Ledger, projections: Sequence[SqlProjection], batch_size: int = 1000
    ) -> None:
        self.ledger = ledger
        self.projections = list(projections)
        self.batch_size = batch_size
        for projection in self.projections:
            self.ensure(projection)

    def ensure(self, projection: SqlProjection) -> None:
        """First use: create generation 1 and publish it. Later: create what the
        projection declares and its current generation lacks (a new index needs
        no rebuild; a new table or column does)."""
        store = projection.view
        with store.transaction(commit=False) as c:  # the usual case: all there, write nothing
            current = published_generation(c, projection.name)
            existing = store.index_names(c)
        if current is not None and existing.issuperset(projection.index_names(current)):
            return
        with store.transaction() as c:
            current = published_generation(c, projection.name)
            if current is None:
                projection.create_generation(c, 1)
                projection.publish_generation(c, 1)
            else:
                projection.create_indexes(c, current, store.index_names(c))

    def generation(self, projection: SqlProjection) -> int:
        return projection.view.generations()[projection.name]

    def position(self, projection: SqlProjection, generation: int | None = None) -> int:
        generation = generation or self.generation(projection)
        return projection.view.position(projection.tracking_key(generation))

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def run_once(self) -> int:
        """Catch every projection up; returns how many events were applied."""
        done = 0
        for projection in self.projections:
            try:
                done += self.catch_up(projection)
            except IntegrityError:
                log.debug("%s: another runner applied the same batch", projection.name)
            except GenerationChanged:
                log.info("%s: rebuilt tables were swapped in; continuing on them", projection.name)
        return done

    def catch_up(
        self,
        projection: SqlProjection,
        generation: int | None = None,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        generation = generation or self.generation(projection)
        batch_size = batch_size or self.batch_size
        key = projection.tracking_key(generation)
        position = projection.view.position(key)
        done = 0
        while True:
            head = self.head()
            if position >= head:
                return done
            notifications = self.ledger.recorder.select_notifications(
                start=position + 1, limit=batch_size, stop=head, topics=projection.topics
            )
            mapper = self.ledger.mapper
            events = [(n.id, mapper.to_domain_event(n)) for n in notifications]
            # A short batch means nothing else up to `head` concerns this projection.
            last = events[-1][0] if len(events) == batch_size else head
            apply_batch(projection, events, last, generation)
            done += len(events)
            position = last
            if progress:
                progress(len(events), position)


class Follower(WakeableLoop):
    """Runs the catch-up in a thread: woken after stage two writes, and on a timer;
    then each of `also` (the seal) in turn."""

    def __init__(
        self, catchup: Catchup, interval: float = 0.5, also: Sequence[Callable[[], object]] = ()
    ) -> None:
        super().__init__("projections", self._follow, interval)
        self.catchup = catchup
        self.also = list(also)

    def _follow(self) -> None:
        self.catchup.run_once()
        for step in self.also:
            step()
