"""The read side of one process: the projections' store, their runner, and the
queries the API answers from. Nothing here folds the log per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import OperationalError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ledger.accounts import CurrentSubscription
from ledger.application import Ledger
from ledger.billing import BillingState
from ledger.domain.catalog import Catalog, Metric
from ledger.domain.gate import Entitlement, Gate, Holding, UnknownFeature, Verdict
from projections.as_of import Owners
from projections.billing_read import customer_answer, subscription_of
from projections.customers import customer_of, registered_customers
from projections.entitlements import HOLDING, entitlements_of, holding, holding_of
from projections.fanout import Fanout
from projections.invoice_history import invoice_page, invoices_of
from projections.notifications import (
    SLOTS,
    emails_of,
    last_cursor,
    notifications_after,
    notifications_of,
)
from projections.ownership import owned_by
from projections.pending_changes import pending_change_of
from projections.reconciliations import reconcile_figures
from projections.registry import PROJECTIONS
from projections.runner import Catchup, Follower
from projections.seal import Seal
from projections.status_cache import MISSING, StatusCache, Watch
from projections.store import ViewStore
from projections.subscription_status import (
    CURRENT,
    current_row,
    current_subscription,
    status_answer,
)
from projections.usage_totals import (
    ended_totals,
    last_alert_cursor,
    usage_alerts_after,
    usage_alerts_of,
    usage_answer,
    usage_check,
    usage_state,
    usage_verdict,
)
from projections.webhook_health import health, outcomes

SHARED = 0.005  # seconds the watchers of a process share one read of the positions


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
        pool_size: int = 8,
    ) -> None:
        self.catalog = catalog
        self.ledger = ledger  # its cipher reveals the personal values held encrypted
        self.store = store or ViewStore(database_url, pool_size=pool_size)
        self._pool_size = pool_size
        unknown = set(names or ()) - set(PROJECTIONS)
        if unknown:
            raise KeyError(
                f"no projection named {', '.join(sorted(unknown))}; known: {', '.join(PROJECTIONS)}"
            )
        self.projections = [PROJECTIONS[n](self.store, catalog) for n in names or PROJECTIONS]
        self.catchup = Catchup(ledger, self.projections, on_applied=self._moved)
        self.seal = Seal(ledger, self.store)
        self.follower = Follower(self.catchup, interval, also=[self.seal.run_once])
        self._async_pool: AsyncConnectionPool | None = None
        # (when, `_commits` then, every projection's position): see `tracked`
        self._tracked: tuple[float, int, dict[str, tuple[int, int]]] | None = None
        self._commits = 0  # projections' commits heard of (`told`, `_moved`), counted
        self.cache = StatusCache(self._status_position)
        # The gate's memory: the current subscription and what its plan grants, kept
        # while neither subscription_status nor entitlements has moved.
        self.gate = Gate(catalog)
        self.holdings = StatusCache(self._holding_position)
        # The metric gate's memory: (period, plan, total) per user and metric, kept
        # while usage_totals has not moved (and while the period holds now).
        self.usage_kept = StatusCache(lambda: self.tracked().get("usage_totals", (0, 0)))
        # The open notification streams of this process, fed by one follower. It
        # reads when woken: by this process's runner as soon as it has applied
        # events, by the watch within 25 ms of another process's; its own tick is a
        # safety net.
        self.fanout = Fanout(
            self._notifications_after,
            self.last_cursor,
            version=self.notifications_version,
            interval=1.0,
        )
        self._feed_seen: object = None
        self.watch = Watch([self.cache, self.holdings, self.usage_kept], also=[self._feed_moved])

    def tracked(self, *, fresh: bool = False) -> dict[str, tuple[int, int]]:
        """Every projection's (generation, tracking position), read with two queries
        and shared for 5 ms by the watchers of this process (the status and gate
        caches, the stream's fan-out) unless a commit of the projections was heard
        of since the read began (the store told of one, `told`, or this process's
        runner applied events, `_moved`): a read made just before a commit is not
        taken for news of it. `fresh` for a request's own read."""
        now, commits = time.monotonic(), self._commits
        memo = self._tracked
        if not fresh and memo is not None and now - memo[0] < SHARED and memo[1] == commits:
            return memo[2]
        generations = self.store.generations()
        keys = {p.name: p.tracking_key(generations[p.name]) for p in self.projections}
        found = self.store.positions(list(keys.values()))
        positions = {name: (generations[name], found.get(key, 0)) for name, key in keys.items()}
        self._tracked = (now, commits, positions)
        return positions

    def told(self) -> None:
        """The store told that projections committed (PostgreSQL's NOTIFY, on the
        listener's thread): the positions shared since are older than that commit,
        even within their 5 ms (a watch's turn that read them just before the
        commit took them for news and waited for its 0.5 s timer: 3% of the
        freshness samples took 520 ms). Then the watch is woken."""
        self._commits += 1
        self.watch.wakeup.wake()

    def _moved(self) -> None:
        """This process's runner applied events: what is kept may be older now
        (another process's runner is noticed by the watchers, within 25 ms)."""
        self._commits += 1
        for kept in (self.cache, self.holdings, self.usage_kept):
            kept.forget()
        self.fanout.wake()

    def _feed_moved(self) -> None:
        """The watch's turn: wake the fan-out when what its feed reads has moved."""
        version = self.notifications_version()
        if version != self._feed_seen:
            self._feed_seen = version
            self.fanout.wake()

    def _position_of(self, name: str) -> tuple[int, int]:
        return self.tracked()[name]

    def notifications_version(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever what the notification feeds read may have changed."""
        tracked = self.tracked()
        return tuple(tracked[n] for n in ("notifications", "usage_totals") if n in tracked)

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
        """The customer's email and name are held as the log holds them (encrypted
        with the customer's key: an erasure leaves nothing readable there, even
        before a rebuild); revealed here, None once erased."""
        with self.store.reading() as c:
            answer = customer_answer(c, user_id)
        if answer is not None:
            answer["email"] = self.ledger.personal.plain(answer["email"])
            answer["name"] = self.ledger.personal.plain(answer["name"])
        return answer

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
                min_size=min(2, self._pool_size),
                max_size=self._pool_size,
                timeout=2,  # a request waits at most this long for a connection
                open=False,
                kwargs={"row_factory": dict_row, "autocommit": True, "prepare_threshold": 0},
            )
            await self._async_pool.open(wait=True, timeout=10)
        self.watch.start()
        await self.fanout.start()

    async def close_async(self) -> None:
        await self.fanout.stop()
        self.watch.stop()
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None

    def entitlements(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        with self.store.reading() as c:
            return entitlements_of(c, self.catalog, user_id, time.time() if now is None else now)

    def invoices(self, user_id: str) -> list[dict[str, Any]]:
        with self.store.reading() as c:
            return invoices_of(c, user_id)

    @property
    def _alerts(self) -> bool:
        """Whether usage_totals runs here: its usage alerts join the notifications
        (their cursors are places of the same positions, projections/notifications.py)."""
        return any(p.name == "usage_totals" for p in self.projections)

    def _settled(self) -> int | None:
        """The highest cursor up to which both notifications and usage_totals have
        applied the log (each follows it on its own): a merged feed stops there, so
        that a reader moving by cursor never passes a notification still to come."""
        followed = {p.name: p for p in self.projections}
        if "notifications" not in followed or "usage_totals" not in followed:
            return None
        tracked = self.tracked(fresh=True)
        lowest = min(tracked[name][1] for name in ("notifications", "usage_totals"))
        return (lowest + 1) * SLOTS - 1

    def notifications(self, user_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        if not self._alerts:
            with self.store.reading() as c:
                return notifications_of(c, user_id, after, limit)
        settled = self._settled()
        with self.store.reading() as c:
            rows = notifications_of(c, user_id, after, limit) + usage_alerts_of(
                c, user_id, after, limit
            )
        if settled is not None:
            rows = [r for r in rows if r["cursor"] <= settled]
        return sorted(rows, key=lambda r: r["cursor"])[:limit]

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

    async def usage_check_async(
        self, user_id: str, metric: Metric, quantity: int, now: float | None = None
    ) -> dict[str, Any]:
        """`usage_check` from memory while usage_totals has not moved; else its two
        reads, in the thread pool."""
        t = int(time.time() if now is None else now)
        key = f"{user_id} {metric.name}"
        kept = self.usage_kept.get(key)
        if kept is MISSING or not kept["period_start"] <= t < kept["period_end"]:
            epoch = self.usage_kept.epoch
            kept = await asyncio.to_thread(self._usage_state, user_id, metric, t)
            self.usage_kept.put(key, kept, epoch)
        return usage_verdict(kept, metric, quantity)

    def _usage_state(self, user_id: str, metric: Metric, t: int) -> dict[str, Any]:
        with self.store.reading() as c:
            return usage_state(c, self.catalog, metric, user_id, t)

    def ended_usage(self, before: float) -> list[dict[str, Any]]:
        with self.store.reading() as c:
            return ended_totals(c, int(before))

    def invoice_page(
        self, user_id: str, limit: int, starting_after: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        with self.store.reading() as c:
            return invoice_page(c, user_id, limit, starting_after)

    def notifications_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """`_notifications_after` with each address revealed (what the outbox mails
        to): a customer's email is held encrypted with the customer's key (None
        once erased: nothing is mailed). The streams need no address."""
        rows = self._notifications_after(after, limit)
        emails = self.ledger.personal.plain_all([r.get("email") for r in rows])
        return [
            {**r, "email": e} if r.get("email") else r for r, e in zip(rows, emails, strict=True)
        ]

    def _notifications_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Every user's, after a cursor: what the stream's fan-out and the outbox follow.
        With the usage alerts: about `limit` of both, in cursor order, never part of
        a cursor's (each source's rows up to the lower of the cursors it was cut at),
        and none past what both projections have settled."""
        if not self._alerts:
            with self.store.reading() as c:
                return notifications_after(c, after, limit)
        settled = self._settled()
        with self.store.reading() as c:
            rows = notifications_after(c, after, limit)
            alerts = usage_alerts_after(c, after, limit)
            cuts = [r[-1]["cursor"] for r in (rows, alerts) if len(r) >= limit]
            if settled is not None:
                cuts.append(settled)
            if cuts:
                upto = min(cuts)
                rows = [r for r in rows if r["cursor"] <= upto]
                alerts = [r for r in alerts if r["cursor"] <= upto]
            emails = emails_of(c, [r["user_id"] for r in alerts])
        alerts = [{**r, "email": emails.get(r["user_id"])} for r in alerts]
        return sorted(rows + alerts, key=lambda r: r["cursor"])

    def last_cursor(self) -> int:
        if not self._alerts:
            with self.store.reading() as c:
                return last_cursor(c)
        settled = self._settled()
        with self.store.reading() as c:
            last = max(last_cursor(c), last_alert_cursor(c))
        return last if settled is None else min(last, settled)

    def webhook_health(self) -> dict[str, Any]:
        with self.store.reading() as c:
            report = health(c)
        webhooks = next(p for p in self.projections if p.name == "webhook_health")
        report["lag"] = self.catchup.head() - self.catchup.position(webhooks)
        return report

    def receipt_outcomes(self) -> dict[str, int]:
        with self.store.reading() as c:
            return outcomes(c)

    @property
    def owners(self) -> Owners | None:
        """The ownership index (None when this process does not keep it): a user's
        aggregates, and the index's position (read first: the rows are at least
        as new)."""
        index = next((p for p in self.projections if p.name == "ownership"), None)
        if index is None:
            return None

        def owners(user_id: str) -> tuple[set[UUID], int]:
            position = self.catchup.position(index)
            with self.store.reading() as c:
                return owned_by(c, user_id), position

        return owners

    def positions(self) -> list[dict[str, Any]]:
        head = self.catchup.head()  # first: a position read after it is never past it
        tracked = self.tracked(fresh=True)
        return [
            {"name": name, "generation": g, "position": pos, "head": head, "lag": head - pos}
            for name, (g, pos) in tracked.items()
        ]

    # --- what `ledger reconcile` compares with Stripe (ledger.reconcile.HeldState) ---

    def catch_up(self) -> None:
        self.catchup.run_once()

    def held_subscriptions(self) -> dict[str, dict[str, Any]]:
        with self.store.reading() as c:
            rows = c.query(
                "SELECT stripe_subscription_id, status, price_id, current_period_start, "
                "current_period_end, cancel_at_period_end, cancel_at, trial_end "
                "FROM subscription_status"
            )
        return {
            r["stripe_subscription_id"]: {
                "status": r["status"],
                "price": r["price_id"],
                "current_period_start": r["current_period_start"],
                "current_period_end": r["current_period_end"],
                "cancel_at_period_end": bool(r["cancel_at_period_end"]),
                "cancel_at": r["cancel_at"],
                "trial_end": r["trial_end"],
            }
            for r in rows
        }

    def held_customers(self) -> dict[str, dict[str, Any]]:
        with self.store.reading() as c:
            rows = registered_customers(c)
        return {
            r["stripe_customer_id"]: {
                "email": self.ledger.personal.plain(r["email"]),  # held encrypted
                "user_id": r["user_id"],
            }
            for r in rows
        }

    def reconcile_figures(self) -> dict[str, Any]:
        with self.store.reading() as c:
            return reconcile_figures(c)
