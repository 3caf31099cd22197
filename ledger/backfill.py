"""`ledger backfill`: Stripe's events list, page by page, through the same
receipt path as a webhook. What is in the log already is a duplicate and costs
nothing; what is new is a receipt marked `source: backfill`, and stage two
processes it like any other."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ledger.application import Ledger
from ledger.intake import GroupCommitter
from ledger.stripe.gateway import StripeGateway
from ledger.stripe.translator import TRANSLATORS

log = logging.getLogger("ledger.backfill")

RETENTION_SECONDS = 30 * 86_400  # Stripe keeps events for 30 days
HANDLED_TYPES = frozenset(TRANSLATORS)


class UnhandledTypes(ValueError):
    """`--types` named an event type the ledger does not handle."""


@dataclass(frozen=True)
class BackfillSummary:
    since: int  # unix seconds, after clamping
    clamped: bool  # the asked-for date was older than Stripe keeps events
    listed: int
    new: int
    duplicate: int


def clamp_since(since: int | None, now: float) -> tuple[int, bool]:
    """Stripe keeps 30 days of events: an older start (or none) is moved up to it."""
    oldest = int(now) - RETENTION_SECONDS
    if since is None:
        return oldest, False
    return (oldest, True) if since < oldest else (since, False)


def check_types(types: Collection[str] | None) -> frozenset[str]:
    if not types:
        return HANDLED_TYPES
    unknown = set(types) - HANDLED_TYPES
    if unknown:
        raise UnhandledTypes(
            f"not handled by the ledger: {', '.join(sorted(unknown))}; "
            f"handled: {', '.join(sorted(HANDLED_TYPES))}"
        )
    return frozenset(types)


class Backfill:
    def __init__(self, ledger: Ledger, gateway: StripeGateway, committer: GroupCommitter) -> None:
        self._ledger = ledger
        self._gateway = gateway
        self._committer = committer

    def run(
        self,
        since: int | None = None,
        types: Collection[str] | None = None,
        *,
        now: float | None = None,
        on_page: Callable[[int, int], None] | None = None,
    ) -> BackfillSummary:
        """Submit every listed event; each page is committed before the next one is
        asked for, so an interrupted run loses nothing and a second run finds
        duplicates. `on_page(listed, new)` after each page. Then runs stage two."""
        wanted = check_types(types)
        start, clamped = clamp_since(since, time.time() if now is None else now)
        if clamped:
            log.warning("Stripe keeps events for 30 days: starting from %d instead", start)
        listed = new = 0
        for page in self._gateway.events(start, wanted):
            futures = [self._committer.submit(delivery) for delivery in page.items]
            recorded = sum(bool(f.result()) for f in futures)  # raises StoreUnavailable
            listed += len(page.items)
            new += recorded
            if on_page is not None:
                on_page(len(page.items), recorded)
        if new:
            self._ledger.process_new()  # safe beside other processors: exactly once
        return BackfillSummary(start, clamped, listed, new, listed - new)
