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
from ledger.domain.catalog import Catalog
from ledger.domain.gate import Entitlement, Gate, Holding, UnknownFeature, Verdict
from projections.entitlements import HOLDING, entitlements_of, holding, holding_of
from projections.fanout import Fanout
from projections.invoice_history import invoice_page, invoices_of
from projections.notifications import last_cursor, notifications_after, notifications_of
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
        # The gate's memory: the current subscription and what its plan grants, kept
        # while neither subscription_status nor entitlements has moved.
        self.gate = Gate(catalog)
        self.holdings = StatusCache(self._holding_position)
        # The open notification streams of this process, fed by one follower.
        self.fanout = Fanout(self.notifications_after, self.last_cursor)

    def _position_of(self, name: str) -> tuple[int, int]:
        projection = next(p for p in self.projections if p.name == name)
        generation = self.catchup.generation(projection)
        return generation, self.catchup.position(projection, generation)

    def _status_position(self) -> tuple[int, int]:
        return self._position_of("subscription_status")

    def _holding_position(self) -> tuple[int, ...]:
        return (*self._status_position(), *self._position_of("entitlements"))

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

    async def status_async(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        """`status` for the event loop: never waits on anything slow. SQLite: one
        indexed read of a local file (readers never wait on the writer in WAL
        mode). PostgreSQL: through an async connection pool."""
        now = time.time() if now is None else now
        row = self.cache.get(user_id)
        if row is MISSING:
            epoch = self.cache.epoch
            row = await self._fetch_one(CURRENT, user_id)
            self.cache.put(user_id, row, epoch)
        return status_answer(row, now, self.catalog.free_tier)

    async def _fetch_one(self, statement: str, user_id: str) -> dict[str, Any] | None:
        """One row of a per-user query, without a thread hop (see `status_async`)."""
        if self._async_pool is None:
            with self.store.reading() as c:
                rows = c.query(statement, {"user_id": user_id})
            return rows[0] if rows else None
        try:
            async with self._async_pool.connection() as conn:
                cursor = await conn.execute(self.store.sql(statement), {"user_id": user_id})
                return await cursor.fetchone()
        except psycopg.Error as exc:  # as the library's own pool reports it
            raise OperationalError(str(exc)) from exc

    # --- the feature gate: the same path as `status_async` --------------------------

    async def holding_async(self, user_id: str) -> Holding | None:
        kept = self.holdings.get(user_id)
        if kept is MISSING:
            epoch = self.holdings.epoch
            kept = holding(await self._fetch_one(HOLDING, user_id))
            self.holdings.put(user_id, kept, epoch)
        return kept

    async def entitlement_async(self, user_id: str, now: float | None = None) -> Entitlement:
        now = time.time() if now is None else now
        return self.gate.entitlement(await self.holding_async(user_id), now)

    async def check_async(self, user_id: str, feature: str, now: float | None = None) -> Verdict:
        """May the user use `feature` now? UnknownFeature before anything is read."""
        if feature not in self.gate.features:
            raise UnknownFeature(feature)
        now = time.time() if now is None else now
        return self.gate.check(await self.holding_async(user_id), feature, now)

    def entitlement(self, user_id: str, now: float | None = None) -> Entitlement:
        with self.store.reading() as c:
            held = holding_of(c, user_id)
        return self.gate.entitlement(held, time.time() if now is None else now)

    def check(self, user_id: str, feature: str, now: float | None = None) -> Verdict:
        with self.store.reading() as c:
            held = holding_of(c, user_id)
        return self.gate.check(held, feature, time.time() if now is None else now)

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
        self.holdings.start()
        await self.fanout.start()

    async def close_async(self) -> None:
        await self.fanout.stop()
        self.cache.stop()
        self.holdings.stop()
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
            return notifications_of(c, user_id, after, limit)

    def invoice_page(
        self, user_id: str, limit: int, starting_after: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        with self.store.reading() as c:
            return invoice_page(c, user_id, limit, starting_after)

    def notifications_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Every user's, after a cursor: what the stream's fan-out and the outbox follow."""
        with self.store.reading() as c:
            return notifications_after(c, after, limit)

    def last_cursor(self) -> int:
        with self.store.reading() as c:
            return last_cursor(c)

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
