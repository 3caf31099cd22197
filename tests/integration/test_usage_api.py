"""Usage metering through the API on both stores: recording (idempotent, all or
none, refusals that record nothing), totals per period, the gate and the alerts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.utils import get_topic
from starlette.testclient import TestClient

from api import answers
from api.app import create_app
from ledger.config import Settings
from ledger.domain.usage import UsageRecord
from ledger.opening import open_ledger
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

USER = "user_1767225600_abcdefghij"
DAY = 86_400


@pytest.fixture
def live_settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_RATE_LIMIT_PER_USER="100000/minute",
        LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
    )


@pytest.fixture
def client(live_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(live_settings)) as c:
        yield c


@pytest.fixture
def headers(client: TestClient) -> dict[str, str]:
    answer = client.post("/api/users", json={"user_id": USER})
    assert answer.status_code == 201
    return {"X-User-ID": USER, "Authorization": f"Bearer {answer.json()['token']}"}


def records_in_log(settings: Settings) -> list[UsageRecord.Recorded]:
    with open_ledger(settings) as ledger:
        found = ledger.recorder.select_notifications(
            start=1, limit=10_000, topics=[get_topic(UsageRecord.Recorded)]
        )
        return [ledger.mapper.to_domain_event(n) for n in found]  # type: ignore[misc]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_of(
    client: TestClient, headers: dict[str, str], starting: str | None = None, **expected: int
) -> dict[str, Any]:
    """The usage answer once the totals show `expected` (metric -> total), in the
    period `starting` then if given: a subscription's period reaches the totals
    through stage two, which may apply it after records the API wrote meanwhile
    (they are placed in a calendar month until then, and placed again)."""

    def answer() -> dict[str, Any] | None:
        got = client.get("/api/v1/billing/usage", headers=headers).json()
        totals = {m: got["metrics"][m]["total"] for m in expected}
        there = starting is None or got["period"]["start"] == starting
        return got if totals == expected and there else None

    return eventually(answer)


def subscribe(
    client: TestClient, start: int, end: int, price: str = "price_lisa_premium_monthly"
) -> None:
    deliver(
        client, "evt_cus", "customer.created", so.customer("cus_u", user_id=USER), created=start
    )
    sub = so.subscription(
        "sub_u", "cus_u", price_id=price, period_start=start, period_end=end, user_id=USER
    )
    deliver(client, "evt_sub", "customer.subscription.created", sub, created=start)


def test_a_record_is_counted_once_and_a_repeated_key_answers_the_first(
    client: TestClient, headers: dict[str, str], live_settings: Settings
) -> None:
    first = client.post(
        "/api/v1/billing/usage",
        json={"metric": "ai_requests", "quantity": 3, "idempotency_key": "k1"},
        headers=headers,
    )
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False and first.json()["quantity"] == 3
    again = client.post(
        "/api/v1/billing/usage",
        json={"metric": "ai_requests", "quantity": 7, "idempotency_key": "k1"},
        headers=headers,
    )
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    usage = usage_of(client, headers, ai_requests=3)
    assert usage["metrics"]["ai_requests"]["included"] == 50  # the free plan's, hard
    assert usage["metrics"]["ai_requests"]["limit"] == "hard"
    assert [(e.user_id, e.quantity, e.idempotency_key) for e in records_in_log(live_settings)] == [
        (USER, 3, "k1")
    ]


class FromNow(float):
    """A time this many seconds from when the test runs, not from when it was
    collected (a slow suite reaches the last cases minutes later)."""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metric": "gpu_hours", "quantity": 1, "idempotency_key": "k"}, "metric"),
        ({"metric": "ai_requests", "quantity": -1, "idempotency_key": "k"}, "quantity"),
        ({"metric": "ai_requests", "quantity": 1.5, "idempotency_key": "k"}, "quantity"),
        ({"metric": "ai_requests", "quantity": "1", "idempotency_key": "k"}, "quantity"),
        ({"metric": "ai_requests", "quantity": 10**15, "idempotency_key": "k"}, "quantity"),
        ({"metric": "ai_requests", "quantity": 1}, "idempotency_key"),
        ({"metric": "ai_requests", "quantity": 1, "idempotency_key": ""}, "idempotency_key"),
        (
            {"metric": "ai_requests", "quantity": 1, "idempotency_key": "k",
             "occurred_at": FromNow(-4 * DAY)},
            "occurred_at",
        ),
        (
            {"metric": "ai_requests", "quantity": 1, "idempotency_key": "k",
             "occurred_at": FromNow(600)},
            "occurred_at",
        ),
        (
            {"metric": "ai_requests", "quantity": 1, "idempotency_key": "k",
             "occurred_at": "2026-01-01T00:00:00"},  # no zone
            "occurred_at",
        ),
    ],
)  # fmt: skip
def test_bad_records_are_refused_naming_the_field_and_nothing_is_recorded(
    client: TestClient,
    headers: dict[str, str],
    live_settings: Settings,
    body: dict[str, Any],
    field: str,
) -> None:
    body = {k: iso(time.time() + v) if isinstance(v, FromNow) else v for k, v in body.items()}
    answer = client.post("/api/v1/billing/usage", json=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error", "error_code"}
    assert answer.json()["error"].startswith(field)
    batch = client.post(
        "/api/v1/billing/usage/batch",
        json={"records": [{"metric": "ai_requests", "quantity": 1, "idempotency_key": "ok"}, body]},
        headers=headers,
    )
    assert batch.status_code == 400
    assert batch.json()["error"].startswith(f"records.1.{field}")
    alone = client.post("/api/v1/billing/usage/batch", json={"records": [body]}, headers=headers)
    assert alone.status_code == 400  # a batch of one still names its record
    assert alone.json()["error"].startswith(f"records.0.{field}")
    assert records_in_log(live_settings) == []


def test_unauthenticated_calls_are_refused(client: TestClient) -> None:
    body = {"metric": "ai_requests", "quantity": 1, "idempotency_key": "k"}
    assert client.post("/api/v1/billing/usage", json=body).status_code == 401
    assert client.get("/api/v1/billing/usage").status_code == 401
    assert client.get("/api/v1/billing/entitlements/check?metric=ai_requests").status_code == 401


def test_a_batch_is_all_or_none_up_to_a_thousand_records_in_256_kib(
    client: TestClient, headers: dict[str, str], live_settings: Settings
) -> None:
    now = time.time()
    records = [
        {"metric": "ai_requests", "quantity": 1, "idempotency_key": f"request-{i:06d}-{'x' * 150}",
         "occurred_at": iso(now - 60)}
        for i in range(1000)
    ]  # fmt: skip
    answer = client.post("/api/v1/billing/usage/batch", json={"records": records}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["recorded"], answer.json()["duplicates"]) == (1000, 0)
    first = answers.UsageBatchRecorded.model_validate_json(answer.content)  # the declared model
    repeat = [*records[:2], {"metric": "storage_mb", "quantity": 40, "idempotency_key": "s1"}]
    answer = client.post("/api/v1/billing/usage/batch", json={"records": repeat}, headers=headers)
    assert answer.headers["content-type"] == "application/json"
    again = answers.UsageBatchRecorded.model_validate_json(answer.content)
    assert (again.recorded, again.duplicates) == (1, 2)
    assert [r.duplicate for r in again.records] == [True, True, False]
    assert again.records[:2] == [
        r.model_copy(update={"duplicate": True}) for r in first.records[:2]
    ]
    usage_of(client, headers, ai_requests=1000, storage_mb=40)
    too_many = client.post(
        "/api/v1/billing/usage/batch", json={"records": records + records[:1]}, headers=headers
    )
    assert too_many.status_code == 400
    huge = [{**r, "idempotency_key": r["idempotency_key"] + "y" * 100} for r in records]
    too_big = client.post("/api/v1/billing/usage/batch", json={"records": huge}, headers=headers)
    assert too_big.status_code == 413
    assert len(records_in_log(live_settings)) == 1001


def test_totals_follow_the_subscription_period_and_the_gate_its_limits(
    client: TestClient, headers: dict[str, str]
) -> None:
    now = int(time.time())
    # without a subscription: the calendar month, the free plan (hard limits)
    month = usage_of(client, headers, ai_requests=0)
    assert month["period"]["start"].endswith("-01T00:00:00Z")
    for i in range(50):
        client.post(
            "/api/v1/billing/usage",
            json={"metric": "ai_requests", "quantity": 1, "idempotency_key": f"f{i}"},
            headers=headers,
        )
    usage_of(client, headers, ai_requests=50)
    gate = client.get(
        "/api/v1/billing/entitlements/check?metric=ai_requests&quantity=1", headers=headers
    )
    assert gate.status_code == 402
    assert gate.json() | {} == {
        "allowed": False, "reason": "limit_reached", "used": 50, "included": 50,
        "metric": "ai_requests", "limit": "hard",
    }  # fmt: skip
    # a premium subscription whose period holds now: soft limits, 1,000 included
    start, end = now - 10 * DAY, now + 20 * DAY
    subscribe(client, start, end)
    usage = eventually(
        lambda: (
            (u := client.get("/api/v1/billing/usage", headers=headers).json())["plan_id"]
            == "lisa_premium"
            and u
        )
    )
    assert usage["period"] == {"start": iso(start), "end": iso(end)}
    # the month's records fall in the subscription's period: they were placed again
    assert usage["metrics"]["ai_requests"] == {
        "total": 50, "included": 1000, "remaining": 950, "limit": "soft", "unit": "request",
        "aggregation": "sum", "overage_amount": 0, "currency": "usd",
    }  # fmt: skip
    client.post(
        "/api/v1/billing/usage",
        json={"metric": "ai_requests", "quantity": 1000, "idempotency_key": "big"},
        headers=headers,
    )
    usage = usage_of(client, headers, ai_requests=1050)
    assert usage["metrics"]["ai_requests"]["overage_amount"] == 50  # 50 requests at 1 cent
    assert usage["metrics"]["ai_requests"]["remaining"] == 0
    gate = client.get("/api/v1/billing/entitlements/check?metric=ai_requests", headers=headers)
    assert gate.status_code == 200
    assert gate.json()["allowed"] is True and gate.json()["overage"] is True
    # a reading of a level: the highest of the period
    for key, mb in (("s1", 900), ("s2", 1200), ("s3", 300)):
        client.post(
            "/api/v1/billing/usage",
            json={"metric": "storage_mb", "quantity": mb, "idempotency_key": key},
            headers=headers,
        )
    usage = usage_of(client, headers, ai_requests=1050, storage_mb=1200)
    assert usage["metrics"]["storage_mb"]["overage_amount"] == 200 * 5
    # another day's period
    before = client.get(
        f"/api/v1/billing/usage?at={iso(start - 40 * DAY)[:10]}", headers=headers
    ).json()
    assert before["metrics"]["ai_requests"]["total"] == 0
    bad = client.get("/api/v1/billing/usage?at=yesterday", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"].startswith("query at:")
    assert (
        client.get("/api/v1/billing/entitlements/check?metric=nope", headers=headers).status_code
        == 400
    )
    assert (
        client.get(
            "/api/v1/billing/entitlements/check?metric=ai_requests&quantity=-1", headers=headers
        ).status_code
        == 400
    )
    # one route, the feature gate's too: exactly one of feature and metric
    for query, field in (
        ("", "feature"),
        ("?metric=ai_requests&feature=sso", "metric"),
        ("?feature=sso&quantity=2", "quantity"),
    ):
        both = client.get(f"/api/v1/billing/entitlements/check{query}", headers=headers)
        assert both.status_code == 400 and both.json()["error"].startswith(f"query {field}:")
    premium = client.get("/api/v1/billing/entitlements/check?feature=premium_features",
                         headers=headers)  # fmt: skip
    assert (premium.status_code, premium.json()) == (200, {"allowed": True})


def test_alerts_at_80_and_100_percent_once_per_metric_and_period(
    client: TestClient, headers: dict[str, str]
) -> None:
    def post(key: str, quantity: int) -> None:
        answer = client.post(
            "/api/v1/billing/usage",
            json={"metric": "ai_requests", "quantity": quantity, "idempotency_key": key},
            headers=headers,
        )
        assert answer.status_code == 201

    post("a", 39)
    usage_of(client, headers, ai_requests=39)
    post("b", 1)  # 40 of 50: 80%
    post("c", 5)
    post("d", 5)  # 50: 100%
    post("e", 5)  # past it: nothing new
    usage_of(client, headers, ai_requests=55)
    admin = {"Authorization": "Bearer adm_test"}

    def alerts() -> list[tuple[str, int]]:
        audit = client.get(f"/api/v1/audit/users/{USER}", headers=admin).json()
        return [(n["kind"], n["detail"]["total"]) for n in audit["notifications"]]

    # the feed shows an alert once the notifications projection has passed it too
    expected = [("usage_warning", 40), ("usage_limit_reached", 50)]
    try:
        eventually(lambda: alerts() == expected)
    except AssertionError:
        assert alerts() == expected  # says what differs


def test_the_period_boundary_and_a_plan_change_mid_period(
    client: TestClient, headers: dict[str, str]
) -> None:
    now = int(time.time())
    boundary = now - now % DAY  # today 00:00 UTC: one period ends, the next starts
    deliver(
        client, "evt_c", "customer.created", so.customer("cus_b", user_id=USER), boundary - 30 * DAY
    )

    def sub(start: int, price: str = "price_lisa_premium_monthly") -> dict[str, Any]:
        return so.subscription(
            "sub_b",
            "cus_b",
            price_id=price,
            period_start=start,
            period_end=start + 30 * DAY,
            user_id=USER,
        )

    deliver(
        client,
        "evt_s1",
        "customer.subscription.created",
        sub(boundary - 30 * DAY),
        boundary - 30 * DAY,
    )
    deliver(client, "evt_s2", "customer.subscription.updated", sub(boundary), boundary)
    for key, t in (("last-second", boundary - 1), ("first-second", boundary)):
        answer = client.post(
            "/api/v1/billing/usage",
            json={"metric": "ai_requests", "quantity": 5 if t < boundary else 7,
                  "idempotency_key": key, "occurred_at": iso(t)},
            headers=headers,
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
    current = usage_of(client, headers, iso(boundary), ai_requests=7)
    assert current["period"] == {"start": iso(boundary), "end": iso(boundary + 30 * DAY)}
    yesterday = client.get(
        f"/api/v1/billing/usage?at={iso(boundary - 1)[:10]}", headers=headers
    ).json()
    assert yesterday["period"] == {"start": iso(boundary - 30 * DAY), "end": iso(boundary)}
    assert yesterday["metrics"]["ai_requests"]["total"] == 5
    # an upgrade now: the current period is counted against the plan in force at its end
    deliver(
        client,
        "evt_s3",
        "customer.subscription.updated",
        sub(boundary, "price_professional_monthly"),
        now,
    )
    upgraded = eventually(
        lambda: (
            (u := client.get("/api/v1/billing/usage", headers=headers).json())["plan_id"]
            == "professional"
            and u
        )
    )
    assert upgraded["metrics"]["ai_requests"]["included"] == 10_000
    assert upgraded["metrics"]["ai_requests"]["total"] == 7
    ended = client.get(f"/api/v1/billing/usage?at={iso(boundary - 1)[:10]}", headers=headers).json()
    assert ended["plan_id"] == "lisa_premium"  # it ended before the change


def test_concurrent_requests_with_one_key_count_once(
    postgres_url: str,
) -> None:
    """Two API processes on one PostgreSQL database, sixteen threads, one key."""
    from concurrent.futures import ThreadPoolExecutor

    settings = make_settings(
        postgres_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_RATE_LIMIT_PER_USER="100000/minute",
        LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
    )
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        token = one.post("/api/users", json={"user_id": USER}).json()["token"]
        auth = {"X-User-ID": USER, "Authorization": f"Bearer {token}"}
        for round_ in range(3):
            body = {"metric": "ai_requests", "quantity": 2, "idempotency_key": f"same-{round_}"}
            with ThreadPoolExecutor(16) as pool:
                answers = list(
                    pool.map(
                        lambda i, body=body: (one if i % 2 else two).post(  # type: ignore[misc]
                            "/api/v1/billing/usage", json=body, headers=auth
                        ),
                        range(16),
                    )
                )
            codes = sorted(a.status_code for a in answers)
            assert codes == [200] * 15 + [201], codes
            assert len({a.json()["id"] for a in answers}) == 1
            assert sum(a.json()["duplicate"] for a in answers) == 15
        usage_of(one, auth, ai_requests=6)
    assert [e.idempotency_key for e in records_in_log(settings)] == ["same-0", "same-1", "same-2"]
