"""The usage_totals projection on both stores: for any records with repeated keys,
in any order and any batches, with the subscription's periods known before,
between or after them, the totals are the aggregation over distinct keys per
period, and the overage is the plan's formula."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.usage import Usage
from ledger.intake import GroupCommitter
from ledger.plans import load_catalog
from ledger.stripe.payloads import read_delivery
from projections.base import SqlProjection, Writer
from projections.read_side import ReadSide
from tests import stripe_objects as so
from tests.streams import MONTH, T0
from tests.usage_streams import usage_records

_prefixes = itertools.count()
CATALOG = load_catalog()


@pytest.fixture
def read(ledger: Ledger, settings: Settings) -> Iterator[ReadSide]:
    side = ReadSide(ledger, CATALOG, settings.database_url)
    try:
        yield side
    finally:
        side.close()


def subscription_deliveries(prefix: str, user: str) -> list[bytes]:
    """A LISA Premium subscription of two periods: [T0, T0+M) then [T0+M, T0+2M)."""
    cus, sub = f"cus_{prefix}", f"sub_{prefix}"
    price = "price_lisa_premium_monthly"
    bodies = [
        so.event(f"evt_{prefix}c", "customer.created", so.customer(cus, user_id=user), created=T0)
    ]
    for i, start in enumerate((T0, T0 + MONTH)):
        obj = so.subscription(
            sub, cus, price_id=price, period_start=start, period_end=start + MONTH
        )
        kind = "created" if i == 0 else "updated"
        bodies.append(
            so.event(f"evt_{prefix}s{i}", f"customer.subscription.{kind}", obj, created=T0 + i)
        )
    return [so.body_of(b) for b in bodies]


def month_of(t: int) -> int:
    day = datetime.fromtimestamp(t, UTC)
    return int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp())


def expected_totals(
    records: list[Usage], subscribed: str, seen: dict[tuple[str, str, int], int]
) -> dict[tuple[str, str, int], int]:
    """Aggregation over distinct keys, per user, metric and period (`seen`: a time
    in each period)."""
    distinct = {(u.user_id, u.idempotency_key): u for u in records}
    out: dict[tuple[str, str, int], int] = {}
    for u in distinct.values():
        if u.user_id == subscribed and T0 <= u.occurred_at < T0 + 2 * MONTH:
            start = T0 if u.occurred_at < T0 + MONTH else T0 + MONTH
        else:
            start = month_of(u.occurred_at)
        key = (u.user_id, u.metric, start)
        seen[key] = u.occurred_at
        if CATALOG.metric(u.metric).aggregation == "max":  # type: ignore[union-attr]
            out[key] = max(out.get(key, 0), u.quantity)
        else:
            out[key] = out.get(key, 0) + u.quantity
    return out


def totals_rows(read: ReadSide) -> dict[tuple[str, str, int], int]:
    with read.store.reading() as c:
        rows = c.query("SELECT user_id, metric, period_start, total FROM usage_totals")
    return {(r["user_id"], r["metric"], r["period_start"]): r["total"] for r in rows}


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_totals_are_the_aggregation_over_distinct_keys_per_period(
    ledger: Ledger, read: ReadSide, data: Any
) -> None:
    prefix = f"p{next(_prefixes)}"
    subscribed, other = f"user_{T0}_{prefix:a<10}", f"user_{T0}_{prefix:b<10}"
    records = data.draw(usage_records([subscribed, other]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)))
    batches = [records[a:b] for a, b in itertools.pairwise([0, *cuts, len(records)])]
    subscribe_after = data.draw(st.integers(0, len(batches)))  # the periods: before, between, after
    committer = GroupCommitter(ledger)
    try:
        for i, batch in enumerate(batches):
            if i == subscribe_after:
                ledger.record(
                    [read_delivery(b) for b in subscription_deliveries(prefix, subscribed)]
                )
                ledger.process_new()
            assert all(isinstance(o, bool) for o in committer.submit_together(batch).result(10))
            if data.draw(st.booleans()):
                read.catchup.run_once()
        if subscribe_after == len(batches):
            ledger.record([read_delivery(b) for b in subscription_deliveries(prefix, subscribed)])
            ledger.process_new()
    finally:
        committer.close()
    read.catchup.run_once()
    seen: dict[tuple[str, str, int], int] = {}
    expected = expected_totals(records, subscribed, seen)
    got = {k: v for k, v in totals_rows(read).items() if k[0] in (subscribed, other)}
    assert got == expected
    for (user, name, start), total in expected.items():
        t = seen[user, name, start]
        answer = read.usage(user, at=t)
        plan = "lisa_premium" if user == subscribed and T0 <= t < T0 + 2 * MONTH else "free"
        metric = CATALOG.metric(name)
        assert metric is not None
        allowance = metric.plans[plan]
        assert answer["plan_id"] == plan
        assert answer["metrics"][name]["total"] == total
        over = max(0, total - allowance.included) * metric.overage_unit_amount
        assert answer["metrics"][name]["overage_amount"] == over


def test_usage_alerts_join_the_notifications_feed_in_order_and_only_when_settled(
    ledger: Ledger, read: ReadSide
) -> None:
    """An alert's cursor is its event's position * 10 + 5 and up, after the places of
    the notifications projection's; the merged feed (the page, the stream's fan-out,
    the outbox) stops where the slower of the two projections stands, so a reader
    moving by cursor never passes a notification still to come."""
    user = f"user_{T0}_feedfeedfe"
    ledger.record([read_delivery(b) for b in subscription_deliveries("feed", user)])
    ledger.process_new()
    committer = GroupCommitter(ledger)
    try:  # the calendar month before the subscription, on the free plan (50 included)
        usage = Usage(user, "ai_requests", 50, "all-at-once", T0 - MONTH)
        assert committer.submit_together([usage]).result(10) == [True]
    finally:
        committer.close()
    by_name = {p.name: p for p in read.projections}
    read.catchup.catch_up(by_name["usage_totals"])  # the alerts' projection runs ahead
    assert read.notifications(user) == []
    assert read.notifications_after(0) == [] and read.last_cursor() < 10
    read.catchup.run_once()
    told = read.notifications(user)
    kinds = [n["kind"] for n in told]
    assert kinds == ["activated", "features_granted", "renewed", "usage_warning",
                     "usage_limit_reached"]  # fmt: skip
    cursors = [n["cursor"] for n in told]
    assert cursors == sorted(set(cursors))
    warning, reached = cursors[-2:]
    assert (warning % 10, reached) == (5, warning + 1)  # both crossed by one record
    feed = [r for r in read.notifications_after(0) if r["user_id"] == user]
    assert [(r["cursor"], r["kind"]) for r in feed] == list(zip(cursors, kinds, strict=True))
    assert read.last_cursor() == reached


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_a_folded_run_of_records_writes_the_rows_of_one_by_one(read: ReadSide, data: Any) -> None:
    """`apply_all` folds a run of usage records per total; its rows (records, totals
    and alerts, with their totals, times and cursors) are those of `apply` record by
    record (each a run of one, as the other tests here check), from whatever the
    tables held before."""
    projection = next(p for p in read.projections if p.name == "usage_totals")
    prefix = f"f{next(_prefixes)}"
    users = [f"user_{T0}_{prefix:a<10}", f"user_{T0}_{prefix:b<10}"]
    before = data.draw(usage_records(users, max_distinct=6))
    records = data.draw(usage_records(users))
    known = {(u.user_id, u.idempotency_key) for u in before}
    before = list({(u.user_id, u.idempotency_key): u for u in before}.values())
    records = list(
        {
            (u.user_id, u.idempotency_key): u
            for u in records
            if (u.user_id, u.idempotency_key) not in known
        }.values()
    )
    positions = itertools.count(1000 * next(_prefixes) + 1)
    earlier = [(next(positions), u.new_events()[0]) for u in before]
    events = [(next(positions), u.new_events()[0]) for u in records]
    tables: list[dict[str, list[tuple[Any, ...]]]] = []
    for generation, apply_all in ((901, projection.apply_all), (902, None)):
        with projection.view.transaction(pipeline=False) as c:
            projection.drop_generation(c, generation)
            projection.create_generation(c, generation)
        with projection.view.transaction() as c:
            w = Writer(c, projection.names(generation))
            for position, event in earlier:  # one by one, as a start
                w.position = position
                projection.apply(event, w)
            if apply_all is not None:
                apply_all(events, w)
            else:
                SqlProjection.apply_all(projection, events, w)
        with projection.view.transaction(commit=False) as c:
            names = projection.names(generation)
            tables.append(
                {
                    t: sorted(tuple(r.values()) for r in c.query(f"SELECT * FROM {names[t]}"))
                    for t in ("usage_records", "usage_totals", "usage_alerts")
                }
            )
        with projection.view.transaction(pipeline=False) as c:
            projection.drop_generation(c, generation)
    folded, one_by_one = tables
    assert folded == one_by_one
