"""Benchmark sections `gate` and `sse`.

`gate`: GET /api/v1/billing/entitlements/check?feature=... for 10,000 registered
users with subscriptions (plans of every kind, a quarter ended), closed loop and
paced at 3,000/s; 200 (allowed) and 402 (refused) are both answers.

`sse`: 1,000 notification streams held open by one API process (stage two and
the projections inline); webhooks for those users, one at a time; the time from
the webhook's 200 to the notification on the user's stream; the server's memory
per open stream."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from scripts.dev import loadgen
from scripts.dev.bench_reads import prepare, token_of
from scripts.dev.common import closed_and_paced, figure, open_store, render_table
from scripts.dev.synthetic import MONTH, PRICES, T0, user_id

USERS = 10_000
REQUESTS = 30_000
PACED_RATE = 3000.0
PACED_SECONDS = 10.0
FEATURES = ("status_check", "premium_features", "api_access", "team_management", "sso")
STREAMS = 1000
WEBHOOKS = 300
NO_LIMITS = {
    "LEDGER_RATE_LIMIT_PER_USER": "1000000/minute",
    "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000000/minute",
}


def _answered(summary: dict[str, Any]) -> dict[str, Any]:
    """The gate answers 200 or 402; both count."""
    by = summary.get("by_status", {})
    answered = by.get("200", 0) + by.get("402", 0)
    elapsed = summary.get("elapsed_s") or 0
    return {
        **summary,
        "answered": answered,
        "rate_per_s": round(answered / elapsed, 1) if elapsed else 0.0,
    }


def check_requests(
    port: int, count: int, users: int, seed: int = 7, *, every: bool = False
) -> list[bytes]:
    """`count` checks for random users; `every`: one for each user, in order."""
    rng = random.Random(seed)
    out = []
    for k in range(users if every else count):
        n, feature = (k if every else rng.randrange(users)), rng.choice(FEATURES)
        out.append(
            f"GET /api/v1/billing/entitlements/check?feature={feature} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nX-User-ID: {user_id(n)}\r\n"
            f"Authorization: Bearer {token_of(n)}\r\n\r\n".encode()
        )
    return out


def bench_gate(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    print(f"  preparing {USERS} users with subscriptions ...", flush=True)
    result: dict[str, Any] = {"setup": prepare(database_url, USERS)}
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={"LEDGER_PROCESSOR": "off", "LEDGER_PROJECTIONS": "off", **NO_LIMITS},
        log_path=log_dir / f"gate-{store}.log",
    )
    try:
        # every user once: the closed loop measures the hot path of known users
        warm = loadgen.run_load_sync(check_requests(server.port, 0, USERS, every=True), server.port)
        if set(warm.statuses()) - {200, 402}:
            raise RuntimeError(f"warm-up: {warm.summary()}")
        result.update(
            closed_and_paced(
                server,
                lambda count, seed: check_requests(server.port, count, USERS, seed),
                ok=_answered,
                concurrency=opts.concurrency,
                time_limit=opts.time_limit,
                count=REQUESTS,
                rate=PACED_RATE,
                seconds=PACED_SECONDS,
            )
        )
        result["server_peak_rss_mib"] = round((server.peak_rss_kib() or 0) / 1024, 1)
    finally:
        server.stop()
    return result


def table_gate(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("store", "checks/s", "p50 ms", "p99 ms", "not answered",
         f"@{PACED_RATE:g}/s p50", "p99", "achieved/s", "peak RSS MiB"),
    ]  # fmt: skip
    for store, r in results.items():
        closed, paced = r.get("closed", {}), r.get("paced", {})
        rows.append(
            (
                store,
                figure(closed.get("rate_per_s")),
                figure(closed.get("p50_ms")),
                figure(closed.get("p99_ms")),
                str(closed.get("sent", 0) - closed.get("answered", 0)),
                figure(paced.get("p50_ms")),
                figure(paced.get("p99_ms")),
                figure(paced.get("rate_per_s")),
                figure(r.get("server_peak_rss_mib")),
            )
        )
    return render_table(rows)


# --- sse ---------------------------------------------------------------------------


def _webhook(n: int, k: int) -> bytes:
    """customer.subscription.updated for synthetic customer n: its payment failed
    (its plan, price and period as the synthetic log has them)."""
    so = loadgen._stripe_objects()
    price = PRICES[n % len(PRICES)]
    obj = so.subscription(
        f"sub_syn{n}", f"cus_syn{n}", status="past_due", price_id=price.stripe_price_id,
        amount=price.unit_amount, interval=price.interval, user_id=user_id(n),
        period_start=T0 + 2 * MONTH, period_end=T0 + 3 * MONTH,
    )  # fmt: skip
    event = so.event(
        f"evt_sse_{n}_{k}", "customer.subscription.updated", obj, created=int(time.time())
    )
    return so.body_of(event)


async def _stream(
    port: int, n: int, sent: dict[int, float], arrivals: dict[int, float], opened: asyncio.Event
) -> None:
    """One user's stream: the first event after its webhook was sent is the one."""
    reader, writer = await asyncio.open_connection(loadgen.HOST, port, limit=2**20)
    writer.write(
        "GET /api/v1/billing/notifications/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nX-User-ID: {user_id(n)}\r\n"
        f"Authorization: Bearer {token_of(n)}\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        while line := await reader.readline():
            if line.startswith(b": stream open"):
                opened.set()
            elif line.startswith(b"id:") and n in sent and n not in arrivals:
                arrivals[n] = time.perf_counter()
    finally:
        writer.close()


async def _sse(port: int, users: list[int], server_pid: int) -> dict[str, Any]:
    arrivals: dict[int, float] = {}
    sent: dict[int, float] = {}
    rss_before = loadgen._proc_status_kib(server_pid, "VmRSS") or 0
    opened = [asyncio.Event() for _ in users]
    tasks = []
    for n, event in zip(users, opened, strict=True):
        tasks.append(asyncio.create_task(_stream(port, n, sent, arrivals, event)))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 120)
    await asyncio.sleep(1)
    rss_open = loadgen._proc_status_kib(server_pid, "VmRSS") or 0
    reader, writer = await asyncio.open_connection(loadgen.HOST, port)
    answered: dict[int, float] = {}
    rng = random.Random(5)
    targets = rng.sample([n for n in users if n % 4], WEBHOOKS)  # every fourth has ended
    for k, n in enumerate(targets):
        body = _webhook(n, k)
        t = int(time.time())
        sent[n] = time.perf_counter()
        writer.write(
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\n"
            f"Stripe-Signature: {loadgen.sign(body, loadgen.DEFAULT_SECRET, t)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status, _, _ = await loadgen._read_response(reader)
        answered[n] = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"webhook answered {status}")
        await asyncio.sleep(0.02)
    deadline = time.perf_counter() + 30
    while (
        len([n for n in targets if n in arrivals]) < len(targets) and time.perf_counter() < deadline
    ):
        await asyncio.sleep(0.05)
    writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = sorted(arrivals[n] - answered[n] for n in targets if n in arrivals)
    ms = lambda p: round(loadgen.percentile(delays, p) * 1000, 1) if delays else None  # noqa: E731
    return {
        "streams": len(users),
        "webhooks": len(targets),
        "delivered": len(delays),
        "p50_ms": ms(50),
        "p99_ms": ms(99),
        "max_ms": round(delays[-1] * 1000, 1) if delays else None,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_open_mib": round(rss_open / 1024, 1),
        "kib_per_stream": round((rss_open - rss_before) / len(users), 1),
    }


def _stage_two_done(database_url: str) -> None:
    """The synthetic log's receipts stand for events written directly: stage two
    starts after them."""
    from eventsourcing.persistence import Tracking

    ledger = open_store(database_url)
    try:
        head = ledger.recorder.max_notification_id() or 0
        ledger.recorder.insert_events([], tracking=Tracking(ledger.name, head))
    finally:
        ledger.close()


def bench_sse(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    print(f"  preparing {STREAMS} users with subscriptions ...", flush=True)
    result: dict[str, Any] = {"setup": prepare(database_url, STREAMS)}
    _stage_two_done(database_url)
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={
            "LEDGER_PROCESSOR": "inline",
            "LEDGER_PROJECTIONS": "inline",
            "LEDGER_PROCESSOR_INTERVAL": "0.5",
            **NO_LIMITS,
        },
        log_path=log_dir / f"sse-{store}.log",
    )
    try:
        print(f"  {STREAMS} streams open; {WEBHOOKS} webhooks, one at a time ...", flush=True)
        result["sse"] = asyncio.run(_sse(server.port, list(range(STREAMS)), server.pid))
    finally:
        server.stop()
    return result


def table_sse(results: dict[str, dict[str, Any]]) -> str:
    rows = [("store", "streams", "webhooks", "delivered", "p50 ms", "p99 ms", "max ms",
             "KiB/stream")]  # fmt: skip
    for store, r in results.items():
        s = r.get("sse", {})
        rows.append(
            (store, str(s.get("streams")), str(s.get("webhooks")), str(s.get("delivered")),
             figure(s.get("p50_ms")), figure(s.get("p99_ms")), figure(s.get("max_ms")),
             figure(s.get("kib_per_stream")))
        )  # fmt: skip
    return render_table(rows)


if __name__ == "__main__":  # a quick look: python -m scripts.dev.bench_gate
    print(json.dumps({"features": FEATURES}))
