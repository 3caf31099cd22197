"""The read side of one process: the projections' store, their runner, and the
queries the API answers from. Nothing here folds the log per request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ledger.accounts import CurrentSubscription
from ledger.application import Ledger
from ledger.billing import BillingState
from ledger.domain.catalog import Catalog, Metric
from projections.billing_read import customer_answer, subscription_of
from projections.customers import customer_of
from projections.entitlements import entitlements_of
from projections.invoice_history import invoices_of
from projections.notifications import notifications_of
from projections.pending_changes import pending_change_of
from projections.registry import PROJECTIONS
from projections.runner import Catchup, Follower
from projections.status_cache import MISSING, StatusCache
from projections.store import ViewStore
from projections.subscription_status import (
    CURRENT,
    current_row,
    current_subscription,
    status_answer,
)
from projections.usage_totals import ended_totals, usage_alerts_of, usage_answer, usage_check
from projections.webhook_health import health, outcomes


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
        self._async_pool: AsyncConnectionPool | None = None
        self.cache = StatusCache(self._status_position)

    def _status_position(self) -> tuple[int, int]:
        status = next(p for p in self.projections if p.name == "subscription_status")
        generation = self.catchup.generation(status)
        return generation, self.catchup.position(status, generation)

    def close(self) -> None:
        self.follower.stop()
        self.store.close()

    def status(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.reading() as c:
            return current_subscription(
                c, user_id, time.time() if now is None else now, self.catalog.free_tier
            )

    def current(self, user_id: str) -> CurrentSubscription | None:
        """The user's current subscription, as `Accounts` reads it."""
        with self.store.reading() as c:
            row = current_row(c, user_id)
        if row is None:
            return None
        return CurrentSubscription(row["stripe_subscription_id"], row["status"])

    def billing_state(self, user_id: str, now: float | None = None) -> BillingState | None:
        """The user's current subscription and pending change, as `Billing` reads it."""
        with self.store.reading() as c:
            row = current_row(c, user_id)
            if row is None:
                return None
            now = time.time() if now is None else now
            pending = pending_change_of(c, row["subscription_id"], now)
        return BillingState(
            stripe_subscription_id=row["stripe_subscription_id"],
            status=row["status"],
            price_id=row["price_id"],
            currency=row["currency"],
            cancel_at_period_end=bool(row["cancel_at_period_end"]),
            cancel_at=row["cancel_at"],
            pending_price_id=pending["price_id"] if pending else None,
            pending_schedule_id=pending["stripe_schedule_id"] if pending else None,
        )

    def customer_id(self, user_id: str) -> str | None:
        with self.store.reading() as c:
            row = customer_of(c, user_id)
        return row["stripe_customer_id"] if row else None

    def billing_subscription(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.reading() as c:
            return subscription_of(
                c, user_id, time.time() if now is None else now, self.catalog.free_tier
            )

    def customer(self, user_id: str) -> dict[str, Any] | None:
        with self.store.reading() as c:
            return customer_answer(c, user_id)

    async def status_async(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        """`status` for the event loop: never waits on anything slow. SQLite: one
        indexed read of a local file (readers never wait on the writer in WAL
        mode). PostgreSQL: through an async connection pool."""
        now = time.time() if now is None else now
        row = self.cache.get(user_id)
        if row is MISSING:
            epoch = self.cache.epoch
            if self._async_pool is None:
                with self.store.reading() as c:
                    row = current_row(c, user_id)
            else:
                try:
                    async with self._async_pool.connection() as conn:
                        cursor = await conn.execute(self.store.sql(CURRENT), {"user_id": user_id})
                        row = await cursor.fetchone()
                except psycopg.Error as exc:  # as the library's own pool reports it
                    raise OperationalError(str(exc)) from exc
            self.cache.put(user_id, row, epoch)
        return status_answer(row, now, self.catalog.free_tier)

    async def open_async(self) -> None:
        """Open the async read pool (PostgreSQL), from the app's lifespan."""
        if self.store.is_postgres and self._async_pool is None:
            self._async_pool = AsyncConnectionPool(
                self.store.conninfo,
                min_size=2,
                max_size=8,
                timeout=2,  # a request waits at most this long for a connection
                open=False,
                kwargs={"row_factory": dict_row, "autocommit": True, "prepare_threshold": 0},
            )
            await self._async_pool.open(wait=True, timeout=10)
        self.cache.start()

    async def close_async(self) -> None:
        self.cache.stop()
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None

    def entitlements(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.reading() as c:
            return entitlements_of(c, self.catalog, user_id, time.time() if now is None else now)

    def invoices(self, user_id: str) -> list[dict[str, Any]]:
        with self.store.reading() as c:
            return invoices_of(c, user_id)

    def notifications(self, user_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self.store.reading() as c:
            rows = notifications_of(c, user_id, after, limit)
            if any(p.name == "usage_totals" for p in self.projections):  # its usage alerts
                rows = sorted(
                    rows + usage_alerts_of(c, user_id, after, limit), key=lambda r: r["cursor"]
                )[:limit]
            return rows

    def usage(self, user_id: str, at: float | None = None) -> dict[str, Any]:
        """The usage of the billing period holding `at` (now by default)."""
        with self.store.reading() as c:
            return usage_answer(c, self.catalog, user_id, int(time.time() if at is None else at))

    def usage_check(
        self, user_id: str, metric: Metric, quantity: int, now: float | None = None
    ) -> dict[str, Any]:
        with self.store.reading() as c:
            return usage_check(
                c, self.catalog, metric, user_id, quantity, int(time.time() if now is None else now)
            )

    def ended_usage(self, before: float) -> list[dict[str, Any]]:
        with self.store.reading() as c:
            return ended_totals(c, int(before))

    def webhook_health(self) -> dict[str, Any]:
        with self.store.reading() as c:
            report = health(c)
        webhooks = next(p for p in self.projections if p.name == "webhook_health")
        report["lag"] = self.catchup.head() - self.catchup.position(webhooks)
        return report

    def receipt_outcomes(self) -> dict[str, int]:
        with self.store.reading() as c:
            return outcomes(c)

    def positions(self) -> list[dict[str, Any]]:
        head = self.catchup.head()
        generations = self.store.generations()
        return [
            {
                "name": p.name,
                "generation": (g := generations[p.name]),
                "position": (pos := self.catchup.position(p, g)),
                "head": head,
                "lag": head - pos,
            }
            for p in self.projections
        ]
