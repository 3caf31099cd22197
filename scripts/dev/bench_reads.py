"""Benchmark section `reads`: GET /api/stripe/get-subscription under load, with
10,000 registered users whose subscriptions are in the projection."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from scripts.dev import loadgen
from scripts.dev.common import closed_and_paced, figure, open_store, render_table
from scripts.dev.synthetic import fill, user_id

USERS = 10_000
REQUESTS = 30_000
PACED_RATE = 3000.0
PACED_SECONDS = 10.0
WORKERS = int(os.environ.get("BENCH_READ_WORKERS", "1"))


def token_of(n: int) -> str:
    return f"bench-token-{n:010d}-0123456789abcdef"


def prepare(database_url: str, users: int) -> dict[str, Any]:
    """Registered users (tokens known to the benchmark) with subscriptions, and the
    projections caught up, written straight through the domain."""
    from ledger.domain.user import User, hash_token
    from ledger.plans import load_catalog
    from projections.read_side import ReadSide

    ledger = open_store(database_url)
    started = time.perf_counter()
    try:
        for first in range(0, users, 2000):
            ledger.save(
                *(
                    User(user_id=user_id(n), token_hash=hash_token(token_of(n)))
                    for n in range(first, min(users, first + 2000))
                )
            )
        fill(ledger, customers=users)  # customer n belongs to user n
        read = ReadSide(ledger, load_catalog(), database_url)
        try:
            read.catchup.run_once()
        finally:
            read.close()
        return {
            "users": users,
            "events": ledger.recorder.max_notification_id(),
            "prepare_s": round(time.perf_counter() - started, 1),
        }
    finally:
        ledger.close()


def requests(
    port: int, count: int, users: int, seed: int = 7, *, every: bool = False
) -> list[bytes]:
    """`count` requests for random users; `every`: one for each user, in order."""
    rng = random.Random(seed)
    out = []
    for k in range(users if every else count):
        n = k if every else rng.randrange(users)
        out.append(
            f"GET /api/stripe/get-subscription HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-User-ID: {user_id(n)}\r\nAuthorization: Bearer {token_of(n)}\r\n\r\n".encode()
        )
    return out


def bench_reads(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    print(f"  preparing {USERS} users with subscriptions ...", flush=True)
    result: dict[str, Any] = {"setup": prepare(database_url, USERS)}
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={
            "LEDGER_PROCESSOR": "off",
            "LEDGER_PROJECTIONS": "off",
            "LEDGER_RATE_LIMIT_PER_USER": "1000000/minute",
            "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000000/minute",
        },
        log_path=log_dir / f"reads-{store}.log",
        workers=WORKERS,
    )
    try:
        # every user once: the closed loop measures the hot path of known users
        warm = loadgen.run_load_sync(
            requests(server.port, 0, USERS, every=True), server.port, keep_bodies=True
        )
        # every user has a subscription; every fourth one has ended
        if warm.statuses() != {200: USERS} or not all(
            b'"id":"sub_syn' in r.body for r in warm.records
        ):
            raise RuntimeError(
                f"warm-up did not read the subscriptions: {warm.summary()} "
                f"{warm.records[0].body[:200]!r}"
            )
        result.update(
            closed_and_paced(
                server,
                lambda count, seed: requests(server.port, count, USERS, seed),
                ok=lambda summary: summary,  # every answer is a 200
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


def table_reads(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "store",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-200",
            f"@{PACED_RATE:g}/s p50",
            "p99",
            "achieved/s",
            "peak RSS MiB",
        )
    ]
    for store, r in results.items():
        closed, paced = r.get("closed", {}), r.get("paced", {})
        rows.append(
            (
                store,
                figure(closed.get("rate_per_s")),
                figure(closed.get("p50_ms")),
                figure(closed.get("p99_ms")),
                str(closed.get("sent", 0) - closed.get("ok", 0)),
                figure(paced.get("p50_ms")),
                figure(paced.get("p99_ms")),
                figure(paced.get("rate_per_s")),
                figure(r.get("server_peak_rss_mib")),
            )
        )
    return render_table(rows)
