"""What caused a domain event: the Stripe event it was translated from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Cause:
    """The Stripe event behind a change. Ordered by `created`, then by event id:
    the tie-break for two events of the same second (see README, "Out of order")."""

    stripe_created: int
    stripe_event_id: str

    def newer_than(self, other: Cause | None) -> bool:
        return other is None or self > other
