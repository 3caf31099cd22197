"""What caused a domain event: the Stripe event it was translated from, or the
API call that asked for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Cause:
    """The Stripe event behind a change. Ordered by `created`, then by event id:
    the tie-break for two events of the same second (see README, "Out of order")."""

    stripe_created: int
    stripe_event_id: str

    def newer_than(self, other: Cause | None) -> bool:
        return other is None or self > other


@dataclass(frozen=True)
class ApiCaused:
    """A base of the events an API call records: the call's request id (the
    `Request-Id` it was answered with). None when no API call recorded it (a
    command), or when it was recorded before version 2, which did not say.

    Version 2 of each such event class; its topic is unchanged. A class that
    needs a version 3 sets `class_version = 3` and adds `upcast_v2_v3`."""

    request_id: str | None = field(default=None, kw_only=True)

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 did not record the request id."""
        state["request_id"] = None
