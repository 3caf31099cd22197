"""The log's own clock: a tick per period, recorded by stage two, so that what
depends on time passing (a payment grace ending) is decided from the log and
comes out the same on every replay."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import NAMESPACE


class Tick(Aggregate):
    """One period of the clock. Its id is its period's start, so two processes
    that tick the same period conflict, and the log holds one tick per period."""

    class Ticked(Aggregate.Created):
        TOPIC = "ledger.clock:Tick.Ticked"
        at: int  # unix seconds: the start of the period

    @staticmethod
    def create_id(at: int) -> UUID:
        return uuid5(NAMESPACE, f"clock:{at}")

    @event(Ticked)
    def __init__(self, at: int) -> None:
        self.at = at

    @classmethod
    def of_period(cls, now: float, period: int) -> Tick:
        """The tick of the period `now` falls in (periods counted from the epoch)."""
        return cls(at=int(now) // period * period)

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.clock:Tick"

    class Created(Aggregate.Created):
        TOPIC = "ledger.clock:Tick.Created"
