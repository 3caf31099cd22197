"""The read side of one process: the projections' store, their runner, and the
queries the API answers from. Nothing here folds the log per request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ledger.application import Ledger
from ledger.plans import Catalog
from projections.entitlements import entitlements_of
from projections.invoice_history import invoices_of
from projections.notifications import notifications_of
from projections.registry import PROJECTIONS
from projections.runner import Catchup, Follower
from projections.store import ViewStore
from projections.subscription_status import current_subscription
from projections.webhook_health import health


class ReadSide:
    def __init__(
        self,
        ledger: Ledger,
        catalog: Catalog,
        database_url: str | None = None,
        *,
        names: Sequence[str] | None = None,
        store: ViewStore | None = None,
        interval: float = 0.5,
    ) -> None:
        self.catalog = catalog
        self.store = store or ViewStore(database_url)
        unknown = set(names or ()) - set(PROJECTIONS)
        if unknown:
            raise KeyError(
                f"no projection named {', '.join(sorted(unknown))}; known: {', '.join(PROJECTIONS)}"
            )
        self.projections = [PROJECTIONS[n](self.store, catalog) for n in names or PROJECTIONS]
        self.catchup = Catchup(ledger, self.projections)
        self.follower = Follower(self.catchup, interval)

    def close(self) -> None:
        self.follower.stop()
        self.store.close()

    def status(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.transaction(commit=False) as c:
            return current_subscription(
                c, user_id, time.time() if now is None else now, self.catalog.free_tier
            )

    def entitlements(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.transaction(commit=False) as c:
            return entitlements_of(c, self.catalog, user_id, time.time() if now is None else now)

    def invoices(self, user_id: str) -> list[dict[str, Any]]:
        with self.store.transaction(commit=False) as c:
            return invoices_of(c, user_id)

    def notifications(self, user_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self.store.transaction(commit=False) as c:
            return notifications_of(c, user_id, after, limit)

    def webhook_health(self) -> dict[str, Any]:
        with self.store.transaction(commit=False) as c:
            report = health(c)
        webhooks = next(p for p in self.projections if p.name == "webhook_health")
        report["lag"] = self.catchup.head() - self.catchup.position(webhooks)
        return report

    def positions(self) -> list[dict[str, Any]]:
        head = self.catchup.head()
        return [
            {
                "name": p.name,
                "generation": (g := self.catchup.generation(p)),
                "position": (pos := self.catchup.position(p, g)),
                "head": head,
                "lag": head - pos,
            }
            for p in self.projections
        ]
