"""Server-Sent Events on a running server (`ledger serve`, uvicorn, in a
subprocess): a client reads the stream, disconnects, reconnects with
Last-Event-ID while webhooks keep arriving, and sees every notification exactly
once, in order; idle streams get heartbeat comments."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.dev import loadgen
from tests import stripe_objects as so
from tests.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.slow

USER = "user_1767225600_streamerss"
T = 1_767_225_600
SERVER_ENV = {
    "LEDGER_PROCESSOR": "inline",
    "LEDGER_PROCESSOR_INTERVAL": "0.05",
    "LEDGER_SSE_HEARTBEAT": "0.3",
    "LEDGER_RATE_LIMIT_PER_USER": "100000/minute",
    "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000/minute",
}


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[loadgen.Server]:
    with loadgen.start_server(
        database_url, env_extra=SERVER_ENV, secret=WEBHOOK_SECRET, log_path=tmp_path / "serve.log"
    ) as running:
        yield running


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(loadgen.HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def deliveries() -> Iterator[tuple[str, dict[str, Any]]]:
    """A customer's life: subscribed, then payments failing and recovering, a
    cancellation scheduled and withdrawn, again and again."""
    yield "customer.created", so.customer("cus_s", user_id=USER, email="s@example.com")
    sub = {"price_id": "price_lisa_premium_monthly"}
    yield "customer.subscription.created", so.subscription("sub_s", "cus_s", **sub)
    for _ in range(6):
        yield (
            "customer.subscription.updated",
            so.subscription("sub_s", "cus_s", status="past_due", **sub),
        )
        yield "customer.subscription.updated", so.subscription("sub_s", "cus_s", **sub)
        yield (
            "customer.subscription.updated",
            so.subscription("sub_s", "cus_s", cancel_at_period_end=True, **sub),
        )
        yield "customer.subscription.updated", so.subscription("sub_s", "cus_s", **sub)


# activated and features_granted, then per round: payment_failed, payment_recovered,
# cancellation_scheduled, cancellation_withdrawn; then the usage alerts (usage_totals'
# rows, merged into the same feed): usage_warning and usage_limit_reached
EXPECTED = 2 + 6 * 4 + 2
# now is past the subscription's period: usage falls in the calendar month, on the
# free plan (50 AI requests included): 80% then 100%
USAGE = (("u1", 40), ("u2", 10))


class Reader:
    """One connection to the stream; reads events until told to stop."""

    def __init__(self, port: int, headers: dict[str, str], last_id: int | None) -> None:
        self.conn = http.client.HTTPConnection(loadgen.HOST, port, timeout=10)
        if last_id is not None:
            headers = {**headers, "Last-Event-ID": str(last_id)}
        self.conn.request("GET", "/api/v1/billing/notifications/stream", headers=headers)
        self.answer = self.conn.getresponse()
        assert self.answer.status == 200
        assert self.answer.getheader("content-type", "").startswith("text/event-stream")
        assert self.answer.getheader("cache-control") == "no-store"  # the Endpoint's, per user
        self.heartbeats = 0

    def events(self) -> Iterator[dict[str, Any] | None]:
        """Each event, and None for each heartbeat."""
        fields: dict[str, str] = {}
        while True:
            line = self.answer.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line.startswith(": heartbeat"):
                self.heartbeats += 1
                yield None
            elif line.startswith(":"):
                continue
            elif line == "":
                if fields:
                    data = json.loads(fields["data"])
                    assert data["cursor"] == int(fields["id"]) and data["kind"] == fields["event"]
                    yield data
                fields = {}
            else:
                name, _, value = line.partition(": ")
                fields[name] = value

    def close(self) -> None:
        self.conn.close()  # the client goes away mid-stream


def test_a_client_that_reconnects_sees_every_notification_once_in_order(
    server: loadgen.Server,
) -> None:
    status, registered = request(
        server.port, "POST", "/api/users", json.dumps({"user_id": USER}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201
    headers = {"X-User-ID": USER, "Authorization": f"Bearer {registered['token']}"}
    planned = list(deliveries())
    done = threading.Event()

    def send_all() -> None:
        for n, (event_type, obj) in enumerate(planned):
            body = so.body_of(so.event(f"evt_s{n}", event_type, obj, created=T + n))
            status, _ = request(
                server.port, "POST", "/webhooks/stripe", body,
                {"Stripe-Signature": so.sign(body, WEBHOOK_SECRET)},
            )  # fmt: skip
            assert status == 200
            time.sleep(0.03)
        for key, quantity in USAGE:
            record = {"metric": "ai_requests", "quantity": quantity, "idempotency_key": key}
            status, _ = request(
                server.port, "POST", "/api/v1/billing/usage", json.dumps(record).encode(),
                {**headers, "Content-Type": "application/json"},
            )  # fmt: skip
            assert status == 201
            time.sleep(0.03)
        done.set()

    sender = threading.Thread(target=send_all)
    sender.start()
    seen: list[dict[str, Any]] = []
    last_id: int | None = None
    heartbeats = 0
    try:
        for stop_after in (3, 5, 7, 10**6):  # three disconnects while deliveries go on
            reader = Reader(server.port, headers, last_id)
            try:
                got = 0
                for event in reader.events():
                    if event is not None:
                        seen.append(event)
                        last_id, got = event["cursor"], got + 1
                        if got >= stop_after:
                            break
                    if done.is_set() and len(seen) >= EXPECTED and reader.heartbeats:
                        break  # everything arrived, and the idle stream was kept alive
            except TimeoutError:
                pass
            finally:
                heartbeats += reader.heartbeats
                reader.close()
            time.sleep(0.2)  # deliveries keep arriving while the client is away
    finally:
        sender.join()

    _, page = request(server.port, "GET", "/api/v1/billing/notifications?limit=500", None, headers)
    stored = page["data"]
    assert len(stored) == EXPECTED
    assert [n["kind"] for n in stored][-2:] == ["usage_warning", "usage_limit_reached"]
    assert [(e["cursor"], e["kind"]) for e in seen] == [(n["cursor"], n["kind"]) for n in stored]
    assert seen == stored
    assert heartbeats > 0


def test_a_server_with_open_streams_stops_promptly(server: loadgen.Server) -> None:
    status, registered = request(
        server.port, "POST", "/api/users", json.dumps({"user_id": USER}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201
    reader = Reader(
        server.port, {"X-User-ID": USER, "Authorization": f"Bearer {registered['token']}"}, None
    )
    try:
        started = time.monotonic()
        server.stop(timeout=15)
        assert time.monotonic() - started < 10
        assert "Application shutdown complete" in server.log_tail()
    finally:
        reader.close()
