"""Keeps projections up to date by following the log, and rebuilds them.

A pull loop over the log's `read_notifications` (filtered by each projection's
topics) applies many events per transaction, with the tracking position written
once per batch, first, so that a second runner of the same projection waits on
it and then rolls back instead of applying anything twice. (The library's
`ProjectionRunner` follows PostgreSQL only; this loop serves both stores.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.loop import WakeableLoop
from projections.base import (
    GenerationChanged,
    SqlProjection,
    apply_batch,
    apply_many_in,
    published_generation,
)
from projections.store import ViewStore

log = logging.getLogger("projections")
Progress = Callable[[int, int], None]  # (events done in this call, position)


class Catchup:
    """Brings projections up to the head of the log."""

    def __init__(
        self,
        ledger: Ledger,
        projections: Sequence[SqlProjection],
        batch_size: int = 1000,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.on_applied = on_applied or (lambda: None)  # after a pass that moved a position
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
        with store.transaction(pipeline=False) as c:  # a schema change
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
        """Catch every projection up in one pass over the log; returns how many
        events were applied. Each batch of the log is read and decoded once for
        every projection behind, and applied to all of them in one transaction
        per store (their tracking positions with it); when that transaction fails,
        each projection's share is applied on its own, so that one projection's
        failure or a concurrent runner holds back no other."""
        generations: dict[ViewStore, dict[str, int]] = {}
        for projection in self.projections:
            if projection.view not in generations:
                generations[projection.view] = projection.view.generations()
        lanes = [
            _Lane(projection, generations[projection.view][projection.name])
            for projection in self.projections
        ]
        for view in generations:
            mine = [lane for lane in lanes if lane.projection.view is view]
            found = view.positions([lane.key for lane in mine])
            for lane in mine:
                lane.position = found.get(lane.key, 0)
        head = self.head()
        done = 0
        while behind := [lane for lane in lanes if lane.position < head]:
            start = min(lane.position for lane in behind)
            topics = sorted({t for lane in behind for t in lane.projection.topics})
            notifications = self.ledger.recorder.read_notifications(
                start + 1, self.batch_size, head, topics
            )
            mapper = self.ledger.mapper
            events = [(n.id, n.topic, mapper.to_domain_event(n)) for n in notifications]
            # A short batch means nothing else up to `head` concerns these projections.
            last = events[-1][0] if len(events) == self.batch_size else head
            shares = [
                (lane, [(i, e) for i, t, e in events if i > lane.position and t in lane.topics])
                for lane in behind
                if lane.position < last
            ]
            done += self._apply(shares, last)
            self.on_applied()
        return done

    def _apply(self, shares: list[tuple[_Lane, list[tuple[int, Any]]]], last: int) -> int:
        done = 0
        for view in {lane.projection.view for lane, _ in shares}:
            mine = [(lane, events) for lane, events in shares if lane.projection.view is view]
            try:
                with view.transaction() as c:
                    apply_many_in(
                        c,
                        [(lane.projection, events, lane.generation) for lane, events in mine],
                        last,
                    )
            except Exception:  # apply each share alone: a failure holds back only its own
                log.debug("a shared batch failed; applying projection by projection", exc_info=True)
                for lane, events in mine:
                    try:
                        apply_batch(lane.projection, events, last, lane.generation)
                    except IntegrityError:
                        log.debug("%s: another runner applied the same batch", lane.name)
                    except GenerationChanged:
                        log.info("%s: rebuilt tables swapped in; continuing on them", lane.name)
                        lane.position = last  # the next pass reads the new generation
                        continue
                    lane.position = last
                    done += len(events)
                continue
            for lane, events in mine:
                lane.position = last
                done += len(events)
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
            notifications = self.ledger.recorder.read_notifications(
                position + 1, batch_size, head, projection.topics
            )
            mapper = self.ledger.mapper
            events = [(n.id, mapper.to_domain_event(n)) for n in notifications]
            # A short batch means nothing else up to `head` concerns this projection.
            last = events[-1][0] if len(events) == batch_size else head
            apply_batch(projection, events, last, generation)
            self.on_applied()
            done += len(events)
            position = last
            if progress:
                progress(len(events), position)


class _Lane:
    """One projection in a pass of `Catchup.run_once`: its generation, tracking key
    and position."""

    def __init__(self, projection: SqlProjection, generation: int) -> None:
        self.projection = projection
        self.name = projection.name
        self.generation = generation
        self.key = projection.tracking_key(generation)
        self.topics = frozenset(projection.topics)
        self.position = 0


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
