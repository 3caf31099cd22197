"""Per user, metric and billing period: the usage total (sum or highest reading),
the alerts at 80% and 100% of the plan's included amount, and the subscription
periods it needs to know which period a record belongs to."""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import singledispatchmethod
from itertools import count
from typing import Any

from ledger.domain.catalog import Catalog, Metric
from ledger.domain.ids import id_text
from ledger.domain.subscription import Subscription
from ledger.domain.usage import UsageRecord
from projections.base import SqlProjection, Writer
from projections.notifications import ALERT_SLOT, SLOTS
from projections.store import Cursor

ALERTS = (("usage_warning", 80), ("usage_limit_reached", 100))  # kind, percent included


def _slots() -> Iterator[int]:
    """An event's places for its usage alerts' cursors (position * SLOTS + place):
    after the notifications projection's, so that the two feeds merge in order; past
    the last place, alerts share it."""
    return (min(i, SLOTS - 1) for i in count(ALERT_SLOT))


PERIOD_AT = (
    "SELECT period_start, period_end, plan_id, stripe_customer_id FROM {usage_periods} "
    "WHERE user_id = :user_id AND period_start <= :t AND :t < period_end "
    "ORDER BY period_start DESC, subscription_id LIMIT 1"
)


_ALERT = (
    "INSERT INTO {usage_alerts} (user_id, metric, period_start, kind, total, included, "
    "occurred_at, cursor) VALUES (:user_id, :metric, :start, :kind, :total, :included, :t, "
    ":cursor) ON CONFLICT (user_id, metric, period_start, kind) DO NOTHING"
)


def _in_list(values: list[str]) -> list[str]:
    """`values` padded with its last to a power of two: a few statements' texts for
    every length of IN list (each text is bound and kept once)."""
    size = 1
    while size < len(values):
        size *= 2
    return values + [values[-1]] * (size - len(values))


# the subscription events whose handlers call `_replace`
_REPLACING = (
    Subscription.Started,
    Subscription.PeriodChanged,
    Subscription.PlanChanged,
    Subscription.Ended,
    Subscription.LinkedToUser,
)


@dataclass
class _Known:
    """What a live batch learnt in `_learn`, kept true as it is applied (`w.memo`)."""

    asked: set[str]  # the subscriptions asked about
    owners: dict[str, str | None]  # those with a row: their user (None: no user yet)
    used: set[str]  # which of their users (and the batch's) have usage records


def month_of(t: int) -> tuple[int, int]:
    """The calendar month (UTC) holding unix time t: [start, end)."""
    day = datetime.fromtimestamp(t, UTC)
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    end = start.replace(day=monthrange(day.year, day.month)[1]).timestamp() + 86_400
    return int(start.timestamp()), int(end)


class UsageTotalsProjection(SqlProjection):
    """A record lands in the period of the user's subscriptions that holds its
    occurred_at, else in its calendar month (UTC). Periods come from the
    subscription's own events, followed here; when one becomes known after
    records it holds (or changes), that user's records are placed again."""

    name = "usage_totals"
    rebuild_cost = 2.0
    tables = {
        "usage_totals": (
            "user_id TEXT NOT NULL, metric TEXT NOT NULL, period_start BIGINT NOT NULL, "
            "period_end BIGINT NOT NULL, total BIGINT NOT NULL, "
            "PRIMARY KEY (user_id, metric, period_start)"
        ),
        "usage_records": (
            "record_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, metric TEXT NOT NULL, "
            "quantity BIGINT NOT NULL, occurred_at BIGINT NOT NULL, month_start BIGINT NOT NULL, "
            "month_end BIGINT NOT NULL, period_start BIGINT NOT NULL, period_end BIGINT NOT NULL"
        ),
        "usage_periods": (
            "subscription_id TEXT NOT NULL, period_start BIGINT NOT NULL, "
            "period_end BIGINT NOT NULL, user_id TEXT, stripe_customer_id TEXT NOT NULL, "
            "plan_id TEXT NOT NULL, PRIMARY KEY (subscription_id, period_start)"
        ),
        "usage_subscriptions": (
            "subscription_id TEXT PRIMARY KEY, user_id TEXT, stripe_customer_id TEXT NOT NULL, "
            "plan_id TEXT NOT NULL, ended_at BIGINT"
        ),
        "usage_alerts": (
            "user_id TEXT NOT NULL, metric TEXT NOT NULL, period_start BIGINT NOT NULL, "
            "kind TEXT NOT NULL, total BIGINT NOT NULL, included BIGINT NOT NULL, "
            "occurred_at BIGINT NOT NULL, cursor BIGINT NOT NULL, "
            "PRIMARY KEY (user_id, metric, period_start, kind)"
        ),
    }
    indexes = {
        "usage_records_user": "{usage_records} (user_id)",
        "usage_periods_user": "{usage_periods} (user_id, period_start)",
        "usage_totals_end": "{usage_totals} (period_end)",
        "usage_alerts_user": "{usage_alerts} (user_id, cursor)",
        "usage_alerts_cursor": "{usage_alerts} (cursor)",
    }
    reader_indexes = frozenset({"usage_totals_end", "usage_alerts_cursor"})

    def __init__(self, view: Any, catalog: Catalog) -> None:
        super().__init__(view, catalog)
        maxes = [m.name for m in catalog.metrics if m.aggregation == "max"]
        self._maxes = set(maxes)
        listed = ", ".join(f"'{name}'" for name in maxes) or "''"  # names match [a-z0-9_]
        self._aggregate = (
            f"CASE WHEN metric IN ({listed}) THEN MAX(quantity) ELSE SUM(quantity) END"
        )

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """Each run of usage records between other events is folded (`_record_all`);
        the other events are applied one by one, in their place, knowing from two
        queries for the whole batch (`_learn`) whose subscriptions' users have usage
        records: one without (the common case) costs its subscription events no
        query each."""
        self._learn(events, w)
        run: list[tuple[int, UsageRecord.Recorded]] = []
        for position, event in events:
            if type(event) is UsageRecord.Recorded:
                run.append((position, event))
                continue
            self._record_all(run, w)
            run = []
            w.position = position
            self.handler(type(event))(self, event, w)
        self._record_all(run, w)

    @apply.register
    def _(self, e: UsageRecord.Recorded, w: Writer) -> None:
        self._record_all([(w.position, e)], w)

    def _learn(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """For `_replace`, in `w.memo`: the user of each of the batch's subscriptions
        that has a row (None: no user), and which of their users (and of the users
        the batch names) have usage records; kept true as the batch is applied."""
        subs = sorted({id_text(e.originator_id) for _, e in events if isinstance(e, _REPLACING)})
        if not subs:
            return
        asked = _in_list(subs)
        owners = {
            row["subscription_id"]: row["user_id"]
            for row in w.query(
                "SELECT subscription_id, user_id FROM {usage_subscriptions} "
                f"WHERE subscription_id IN ({', '.join(f':s{i}' for i in range(len(asked)))})",
                **{f"s{i}": sub for i, sub in enumerate(asked)},
            )
        }
        named = {getattr(e, "user_id", None) for _, e in events if isinstance(e, _REPLACING)}
        users = sorted({u for u in [*owners.values(), *named] if u})
        used = set()
        if users:
            users = _in_list(users)
            used = {
                row["user_id"]
                for row in w.query(
                    "SELECT DISTINCT user_id FROM {usage_records} "
                    f"WHERE user_id IN ({', '.join(f':u{i}' for i in range(len(users)))})",
                    **{f"u{i}": user for i, user in enumerate(users)},
                )
            }
        w.memo["usage"] = _Known(set(subs), owners, used)

    def _record_all(self, run: Sequence[tuple[int, UsageRecord.Recorded]], w: Writer) -> None:
        """Usage records (position, event), in log order, with no other event between
        them (so the periods do not change): the rows they would make one by one,
        in a few statements. The users' periods and totals are read with one query
        each (on PostgreSQL, inside the runner's pipeline, every read waits for a
        round trip); each record's period is found among its user's as PERIOD_AT
        finds it; each total is folded in memory (sum or highest reading) and
        written once; an alert is written at the first record that crosses it,
        with the total, time and cursor that record would have given it."""
        if not run:
            return
        if known := w.memo.get("usage"):
            known.used.update(e.user_id for _, e in run)
        users = _in_list(sorted({e.user_id for _, e in run}))
        marks = ", ".join(f":u{i}" for i in range(len(users)))
        params = {f"u{i}": user for i, user in enumerate(users)}
        periods: dict[str, list[dict[str, Any]]] = {}
        for row in w.query(
            "SELECT user_id, period_start, period_end, plan_id FROM {usage_periods} "
            f"WHERE user_id IN ({marks}) ORDER BY period_start DESC, subscription_id",
            **params,
        ):
            periods.setdefault(row["user_id"], []).append(row)
        known = {
            (row["user_id"], row["metric"], row["period_start"]): row["total"]
            for row in w.query(
                "SELECT user_id, metric, period_start, total FROM {usage_totals} "
                f"WHERE user_id IN ({marks})",
                **params,
            )
        }
        places: dict[tuple[str, int], tuple[int, int, int, int, str]] = {}
        records: list[dict[str, Any]] = []
        folds: dict[tuple[str, str, int], list[tuple[int, UsageRecord.Recorded, str]]] = {}
        ends: dict[tuple[str, str, int], int] = {}
        for position, e in run:
            place = places.get((e.user_id, e.occurred_at))
            if place is None:
                month_start, month_end = month_of(e.occurred_at)
                t = e.occurred_at
                found = next(
                    (
                        p
                        for p in periods.get(e.user_id, ())
                        if p["period_start"] <= t < p["period_end"]
                    ),
                    None,
                )  # PERIOD_AT's row
                place = places[(e.user_id, t)] = (
                    (month_start, month_end, found["period_start"], found["period_end"],
                     found["plan_id"])
                    if found
                    else (month_start, month_end, month_start, month_end, self.catalog.free_plan.id)
                )  # fmt: skip
            month_start, month_end, start, end, plan_id = place
            records.append(
                {"id": id_text(e.originator_id), "user_id": e.user_id, "metric": e.metric,
                 "quantity": e.quantity, "t": e.occurred_at, "month_start": month_start,
                 "month_end": month_end, "start": start, "end": end}
            )  # fmt: skip
            key = (e.user_id, e.metric, start)
            folds.setdefault(key, []).append((position, e, plan_id))
            ends.setdefault(key, end)  # a total's end is its first record's
        w.execute_many(
            "INSERT INTO {usage_records} (record_id, user_id, metric, quantity, occurred_at, "
            "month_start, month_end, period_start, period_end) VALUES (:id, :user_id, :metric, "
            ":quantity, :t, :month_start, :month_end, :start, :end)",
            records,
        )
        totals: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        for key, recorded in folds.items():
            user_id, name, start = key
            total: int | None = known.get(key)
            highest = name in self._maxes
            metric = self.catalog.metric(name)
            told: set[str] = set()
            for position, e, plan_id in recorded:
                if total is None:
                    total = e.quantity
                elif highest:
                    total = max(total, e.quantity)
                else:
                    total += e.quantity
                if metric is not None and len(told) < len(ALERTS):
                    allowance = metric.allowance(plan_id)
                    if allowance.limit == "none":
                        continue
                    slots = _slots()
                    for kind, percent in ALERTS:
                        if total > 0 and total * 100 >= allowance.included * percent:
                            slot = next(slots)  # taken whether or not it is told here
                            if kind not in told:
                                told.add(kind)
                                alerts.append(
                                    {"user_id": user_id, "metric": name, "start": start,
                                     "kind": kind, "total": total,
                                     "included": allowance.included, "t": e.occurred_at,
                                     "cursor": position * SLOTS + slot}
                                )  # fmt: skip
            totals.append(
                {"user_id": user_id, "metric": name, "start": start, "end": ends[key],
                 "total": total}
            )  # fmt: skip
        w.execute_many(
            "INSERT INTO {usage_totals} (user_id, metric, period_start, period_end, total) "
            "VALUES (:user_id, :metric, :start, :end, :total) "
            "ON CONFLICT (user_id, metric, period_start) DO UPDATE SET total = excluded.total",
            totals,
        )
        w.execute_many(_ALERT, alerts)

    def _alert(
        self,
        w: Writer,
        metric: Metric,
        plan_id: str,
        user_id: str,
        start: int,
        total: int,
        slots: Iterator[int],
        known: Collection[tuple[str, int, str]] = (),
    ) -> None:
        """usage_warning at 80% of the included amount, usage_limit_reached at 100%:
        once per metric and period (the first event to cross it), at the period's
        start. `known`: the (metric, period start, kind) already told, which need no
        place of `slots`."""
        allowance = metric.allowance(plan_id)
        if allowance.limit == "none":
            return
        for kind, percent in ALERTS:
            if (metric.name, start, kind) in known:
                continue
            if total > 0 and total * 100 >= allowance.included * percent:
                w.execute(
                    _ALERT,
                    user_id=user_id, metric=metric.name, start=start, kind=kind, total=total,
                    included=allowance.included, t=start,
                    cursor=w.position * SLOTS + next(slots),
                )  # fmt: skip

    # --- the subscription periods ---------------------------------------------------

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        plan, _, _ = self.catalog.resolve(e.price)
        w.execute(
            "INSERT INTO {usage_subscriptions} (subscription_id, user_id, stripe_customer_id, "
            "plan_id) VALUES (:id, :user_id, :cus, :plan_id)",
            id=id_text(e.originator_id), user_id=e.user_id, cus=e.stripe_customer_id,
            plan_id=plan.id,
        )  # fmt: skip
        if known := w.memo.get("usage"):
            known.owners[id_text(e.originator_id)] = e.user_id
        self._period(w, id_text(e.originator_id), e.current_period_start, e.current_period_end)

    @apply.register
    def _(self, e: Subscription.PeriodChanged, w: Writer) -> None:
        self._period(w, id_text(e.originator_id), e.current_period_start, e.current_period_end)

    def _period(self, w: Writer, sub: str, start: int | None, end: int | None) -> None:
        if start is None or end is None or end <= start:
            return
        w.execute(
            "INSERT INTO {usage_periods} (subscription_id, period_start, period_end, user_id, "
            "stripe_customer_id, plan_id) SELECT subscription_id, :start, "
            "CASE WHEN ended_at IS NOT NULL AND ended_at < :end THEN ended_at ELSE :end END, "
            "user_id, stripe_customer_id, plan_id FROM {usage_subscriptions} "
            "WHERE subscription_id = :id AND (ended_at IS NULL OR ended_at > :start) "
            "ON CONFLICT (subscription_id, period_start) DO UPDATE SET period_end = "
            "excluded.period_end",
            id=sub, start=start, end=end,
        )  # fmt: skip
        self._replace(w, sub)

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        """The included amounts of a period are those of the plan in force at its end."""
        plan, _, _ = self.catalog.resolve(e.price)
        params = {"id": id_text(e.originator_id), "plan_id": plan.id, "t": e.stripe_created}
        w.execute(
            "UPDATE {usage_subscriptions} SET plan_id = :plan_id WHERE subscription_id = :id",
            **params,
        )
        w.execute(
            "UPDATE {usage_periods} SET plan_id = :plan_id "
            "WHERE subscription_id = :id AND period_end > :t",
            **params,
        )
        self._replace(w, id_text(e.originator_id))

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        """Usage after the end lands in calendar months."""
        ended = e.ended_at if e.ended_at is not None else e.stripe_created
        params = {"id": id_text(e.originator_id), "t": ended}
        w.execute(
            "UPDATE {usage_subscriptions} SET ended_at = :t WHERE subscription_id = :id", **params
        )
        w.execute(
            "DELETE FROM {usage_periods} WHERE subscription_id = :id AND period_start >= :t",
            **params,
        )
        w.execute(
            "UPDATE {usage_periods} SET period_end = :t "
            "WHERE subscription_id = :id AND period_end > :t",
            **params,
        )
        self._replace(w, id_text(e.originator_id))

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        params = {"id": id_text(e.originator_id), "user_id": e.user_id}
        for table in ("usage_subscriptions", "usage_periods"):
            w.execute(
                f"UPDATE {{{table}}} SET user_id = :user_id WHERE subscription_id = :id", **params
            )
        known = w.memo.get("usage")
        if known and params["id"] in known.owners:  # a row to update
            known.owners[params["id"]] = e.user_id
        self._replace(w, id_text(e.originator_id))

    def _replace(self, w: Writer, sub: str) -> None:
        """Place the records of the subscription's user again, total them again, and
        tell the alerts the new totals cross. A user without usage records (the
        common case; records are never deleted, so such a user has no totals
        either), or a subscription without a user, is one query and nothing is
        written; otherwise the writes go in one round trip with the query of the
        new totals."""
        known = w.memo.get("usage")
        if known and sub in known.asked:  # without a query (`_learn`)
            user_id = known.owners.get(sub)
            if user_id is None or user_id not in known.used:
                return
        else:
            found = w.query(
                "SELECT user_id FROM {usage_records} WHERE user_id = (SELECT user_id "
                "FROM {usage_subscriptions} WHERE subscription_id = :id) LIMIT 1",
                id=sub,
            )
            if not found:
                return
            user_id = found[0]["user_id"]
        for bound in ("start", "end"):
            w.execute(
                f"UPDATE {{usage_records}} SET period_{bound} = COALESCE((SELECT p.period_{bound} "
                "FROM {usage_periods} p WHERE p.user_id = {usage_records}.user_id "
                "AND p.period_start <= {usage_records}.occurred_at "
                "AND {usage_records}.occurred_at < p.period_end "
                f"ORDER BY p.period_start DESC, p.subscription_id LIMIT 1), month_{bound}) "
                "WHERE user_id = :user_id",
                user_id=user_id,
            )
        w.execute("DELETE FROM {usage_totals} WHERE user_id = :user_id", user_id=user_id)
        w.execute(
            "INSERT INTO {usage_totals} (user_id, metric, period_start, period_end, total) "
            f"SELECT user_id, metric, period_start, MAX(period_end), {self._aggregate} "
            "FROM {usage_records} WHERE user_id = :user_id GROUP BY user_id, metric, period_start",
            user_id=user_id,
        )
        totals = w.query(
            "SELECT t.metric, t.period_start, t.total, p.plan_id "
            "FROM {usage_totals} t LEFT JOIN {usage_periods} p ON p.user_id = t.user_id "
            "AND p.period_start = t.period_start AND p.period_end = t.period_end "
            "WHERE t.user_id = :user_id ORDER BY t.metric, t.period_start, p.plan_id",
            user_id=user_id,
        )
        known = {
            (row["metric"], row["period_start"], row["kind"])
            for row in w.query(
                "SELECT metric, period_start, kind FROM {usage_alerts} WHERE user_id = :user_id",
                user_id=user_id,
            )
        }
        slots = _slots()
        for row in totals:
            metric = self.catalog.metric(row["metric"])
            if metric is not None:
                plan_id = row["plan_id"] or self.catalog.free_plan.id
                start = row["period_start"]
                self._alert(w, metric, plan_id, user_id, start, row["total"], slots, known)


# --- readers -------------------------------------------------------------------------


def period_at(c: Cursor, catalog: Catalog, user_id: str, t: int) -> dict[str, Any]:
    """The billing period holding t: the user's subscription period, else the
    calendar month; with the plan in force (the free plan's in a month)."""
    rows = c.query(PERIOD_AT.format(usage_periods="usage_periods"), {"user_id": user_id, "t": t})
    if rows:
        return rows[0]
    start, end = month_of(t)
    return {
        "period_start": start,
        "period_end": end,
        "plan_id": catalog.free_plan.id,
        "stripe_customer_id": None,
    }


def totals_in(c: Cursor, user_id: str, period_start: int) -> dict[str, int]:
    rows = c.query(
        "SELECT metric, total FROM usage_totals WHERE user_id = :user_id AND period_start = :start",
        {"user_id": user_id, "start": period_start},
    )
    return {row["metric"]: row["total"] for row in rows}


def total_of(c: Cursor, user_id: str, metric: str, period_start: int) -> int:
    rows = c.query(
        "SELECT total FROM usage_totals WHERE user_id = :user_id AND metric = :metric "
        "AND period_start = :start",
        {"user_id": user_id, "metric": metric, "start": period_start},
    )
    return rows[0]["total"] if rows else 0


def ended_totals(c: Cursor, before: int) -> list[dict[str, Any]]:
    """Every total of a period that ended at or before `before`, with its plan and
    customer (none for a calendar month), by user, metric and period."""
    return c.query(
        "SELECT t.user_id, t.metric, t.period_start, t.period_end, t.total, p.plan_id, "
        "p.stripe_customer_id FROM usage_totals t LEFT JOIN usage_periods p "
        "ON p.user_id = t.user_id AND p.period_start = t.period_start "
        "AND p.period_end = t.period_end WHERE t.period_end <= :before "
        "ORDER BY t.user_id, t.period_start, t.metric",
        {"before": before},
    )


def usage_alerts_of(
    c: Cursor, user_id: str, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """The alerts as notifications (the shape of notifications_of's rows)."""
    rows = c.query(
        "SELECT cursor, kind, metric, period_start, total, included, occurred_at "
        "FROM usage_alerts WHERE user_id = :user_id AND cursor > :after "
        "ORDER BY cursor, metric, kind LIMIT :limit",
        {"user_id": user_id, "after": after, "limit": limit},
    )
    return [_as_notification(row) for row in rows]


def usage_alerts_after(c: Cursor, after: int, limit: int = 500) -> list[dict[str, Any]]:
    """Every user's alerts after a cursor, in cursor order (the shape of
    notifications_after's rows, without the email): about `limit` of them, but
    never part of a cursor's."""
    params = {"after": after, "skip": limit - 1}
    bound = c.query(
        "SELECT cursor FROM usage_alerts WHERE cursor > :after ORDER BY cursor "
        "LIMIT 1 OFFSET :skip",
        params,
    )
    upto = "AND cursor <= :upto " if bound else ""
    rows = c.query(
        "SELECT user_id, cursor, kind, metric, period_start, total, included, occurred_at "
        f"FROM usage_alerts WHERE cursor > :after {upto}ORDER BY cursor, user_id, metric, kind",
        {**params, "upto": bound[0]["cursor"] if bound else None},
    )
    return [{**_as_notification(row), "user_id": row["user_id"]} for row in rows]


def last_alert_cursor(c: Cursor) -> int:
    rows = c.query("SELECT MAX(cursor) AS last FROM usage_alerts", {})
    return rows[0]["last"] or 0


def _as_notification(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "cursor": row["cursor"],
        "kind": row["kind"],
        "stripe_subscription_id": None,
        "occurred_at": row["occurred_at"],
        "detail": {
            "metric": row["metric"],
            "period_start": row["period_start"],
            "total": row["total"],
            "included": row["included"],
        },
    }


def _iso_day(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_answer(c: Cursor, catalog: Catalog, user_id: str, t: int) -> dict[str, Any]:
    """GET /api/v1/billing/usage: every metric of the period holding t, with the
    included amount of the plan in force, what remains and the overage so far."""
    period = period_at(c, catalog, user_id, t)
    totals = totals_in(c, user_id, period["period_start"])
    metrics = {}
    for metric in catalog.metrics:
        allowance = metric.allowance(period["plan_id"])
        total = totals.get(metric.name, 0)
        _, amount = metric.overage(total, period["plan_id"])
        unlimited = allowance.limit == "none"
        metrics[metric.name] = {
            "total": total,
            "included": None if unlimited else allowance.included,
            "remaining": None if unlimited else max(0, allowance.included - total),
            "limit": allowance.limit,
            "unit": metric.unit,
            "aggregation": metric.aggregation,
            "overage_amount": amount,
            "currency": metric.currency,
        }
    return {
        "period": {
            "start": _iso_day(period["period_start"]),
            "end": _iso_day(period["period_end"]),
        },
        "plan_id": period["plan_id"],
        "metrics": metrics,
    }


def usage_check(
    c: Cursor, catalog: Catalog, metric: Metric, user_id: str, quantity: int, t: int
) -> dict[str, Any]:
    """The gate: may the user use `quantity` more of the metric now? Past a hard
    limit: not allowed; past a soft one: allowed, as overage."""
    return usage_verdict(usage_state(c, catalog, metric, user_id, t), metric, quantity)


def usage_state(
    c: Cursor, catalog: Catalog, metric: Metric, user_id: str, t: int
) -> dict[str, Any]:
    """What the gate of a metric reads: the period holding t, its plan, and the total so far."""
    period = period_at(c, catalog, user_id, t)
    return {**period, "used": total_of(c, user_id, metric.name, period["period_start"])}


def usage_verdict(state: dict[str, Any], metric: Metric, quantity: int) -> dict[str, Any]:
    allowance = metric.allowance(state["plan_id"])
    used = state["used"]
    after = used + quantity if metric.aggregation == "sum" else max(used, quantity)
    over = allowance.limit != "none" and after > allowance.included
    answer: dict[str, Any] = {
        "allowed": not (over and allowance.limit == "hard"),
        "metric": metric.name,
        "used": used,
        "included": None if allowance.limit == "none" else allowance.included,
        "limit": allowance.limit,
    }
    if not answer["allowed"]:
        answer["reason"] = "limit_reached"
    else:
        answer["overage"] = over
    return answer
