"""Benchmark section `usage`: recording usage and the gate, against `ledger serve`.

1. single records (POST /api/v1/billing/usage), each a new key, over CONCURRENCY
   connections as fast as answered: records/s, p50/p99;
2. batches of 1,000 records (POST /api/v1/billing/usage/batch): records/s;
3. single records paced at 1,000/s: p50/p99 at that rate;
4. the gate (GET /api/v1/billing/entitlements/check?metric=ai_requests) once the
   usage_totals projection holds everything recorded: checks/s, p50/p99, closed
   loop, then paced at 3,000/s.
Users are registered straight through the domain; stage two and the projections
do not run in the server during the runs (the projection is caught up before the
gate)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from scripts.dev import loadgen
from scripts.dev.common import figure, open_store, render_table
from scripts.dev.synthetic import user_id

USERS = 1000
SINGLE = 20_000
BATCHES = 100  # of 1,000 records
BATCH_CONCURRENCY = 4
PACED_RATE = 1000.0
PACED_COUNT = 10_000
GATE = 20_000
GATE_RATE = 3000.0
GATE_SECONDS = 10.0


def token_of(n: int) -> str:
    return f"bench-usage-token-{n:010d}-0123456789"


def prepare(database_url: str) -> None:
    from ledger.domain.user import User, hash_token

    ledger = open_store(database_url)
    try:
        ledger.save(
            *(User(user_id=user_id(n), token_hash=hash_token(token_of(n))) for n in range(USERS))
        )
    finally:
        ledger.close()


def _head(method: str, path: str, port: int, n: int) -> str:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-User-ID: {user_id(n)}\r\n"
        f"Authorization: Bearer {token_of(n)}\r\n"
    )


def _post(path: str, port: int, n: int, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return (
        _head("POST", path, port, n)
        + f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def singles(port: int, count: int, tag: str, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        _post(
            "/api/v1/billing/usage",
            port,
            rng.randrange(USERS),
            {"metric": "ai_requests", "quantity": 1, "idempotency_key": f"{tag}-{i}"},
        )
        for i in range(count)
    ]


def batches(port: int, count: int, tag: str) -> list[bytes]:
    return [
        _post(
            "/api/v1/billing/usage/batch",
            port,
            b % USERS,
            {
                "records": [
                    {"metric": "ai_requests", "quantity": 1, "idempotency_key": f"{tag}-{b}-{i}"}
                    for i in range(1000)
                ]
            },
        )
        for b in range(count)
    ]


def gate(port: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    path = "/api/v1/billing/entitlements/check?metric=ai_requests&quantity=1"
    return [
        (_head("GET", path, port, rng.randrange(USERS)) + "\r\n").encode() for _ in range(count)
    ]


def _summary(run: loadgen.LoadResult, ok: tuple[int, ...], per_request: int = 1) -> dict[str, Any]:
    out = run.summary()
    answered = sum(1 for r in run.records if r.status in ok)
    out["ok"] = answered
    out["rate_per_s"] = round(answered * per_request / run.elapsed, 1) if run.elapsed else 0.0
    return out


def bench_usage(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    print(f"  registering {USERS} users ...", flush=True)
    prepare(database_url)
    result: dict[str, Any] = {}
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={
            "LEDGER_PROCESSOR": "off",
            "LEDGER_PROJECTIONS": "off",
            "LEDGER_RATE_LIMIT_PER_USER": "100000000/minute",
            "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000000/minute",
        },
        log_path=log_dir / f"usage-{store}.log",
    )
    try:
        port = server.port
        loadgen.run_load_sync(singles(port, 1000, "warm", 1), port, concurrency=8)
        print(f"  single records: {SINGLE}, {opts.concurrency} connections ...", flush=True)
        cpu0 = server.cpu_seconds() or 0.0
        run = loadgen.run_load_sync(
            singles(port, SINGLE, "single", 2), port, concurrency=opts.concurrency,
            time_limit=opts.time_limit,
        )  # fmt: skip
        result["single"] = _summary(run, (201,))
        result["single"]["server_cpu_s"] = round((server.cpu_seconds() or 0.0) - cpu0, 2)
        print(
            f"  batches: {BATCHES} x 1,000 records, {BATCH_CONCURRENCY} connections ...", flush=True
        )
        run = loadgen.run_load_sync(
            batches(port, BATCHES, "batch"), port, concurrency=BATCH_CONCURRENCY,
            time_limit=opts.time_limit,
        )  # fmt: skip
        result["batch"] = _summary(run, (200,), per_request=1000)
        print(f"  paced: {PACED_COUNT} single records at {PACED_RATE:g}/s ...", flush=True)
        run = loadgen.run_load_sync(
            singles(port, PACED_COUNT, "paced", 3), port, concurrency=opts.concurrency,
            rate=PACED_RATE, time_limit=PACED_COUNT / PACED_RATE * 1.5 + 5,
        )  # fmt: skip
        result["paced"] = _summary(run, (201,))
        print("  catching up usage_totals ...", flush=True)
        result["catch_up"] = _catch_up(database_url)
        print(f"  gate: {GATE} checks, {opts.concurrency} connections ...", flush=True)
        run = loadgen.run_load_sync(
            gate(port, GATE, 4), port, concurrency=opts.concurrency, time_limit=opts.time_limit
        )
        result["gate"] = _summary(run, (200, 402))
        run = loadgen.run_load_sync(
            gate(port, int(GATE_RATE * GATE_SECONDS), 5), port, concurrency=opts.concurrency,
            rate=GATE_RATE, time_limit=GATE_SECONDS * 1.5 + 5,
        )  # fmt: skip
        result["gate_paced"] = _summary(run, (200, 402))
        result["server_peak_rss_mib"] = round((server.peak_rss_kib() or 0) / 1024, 1)
    finally:
        server.stop()
    return result


def _catch_up(database_url: str) -> dict[str, Any]:
    from ledger.plans import load_catalog
    from projections.read_side import ReadSide

    ledger = open_store(database_url)
    try:
        read = ReadSide(ledger, load_catalog(), database_url, names=["usage_totals"])
        try:
            started = time.perf_counter()
            events = 0
            while done := read.catchup.run_once():
                events += done
            elapsed = time.perf_counter() - started
            return {"events": events, "elapsed_s": round(elapsed, 1),
                    "events_per_s": round(events / elapsed, 1) if elapsed else None}  # fmt: skip
        finally:
            read.close()
    finally:
        ledger.close()


def table_usage(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("store", "single/s", "p50 ms", "p99 ms", "batched rec/s", "@1000/s p50", "p99",
         "projection ev/s", "gate/s", "p50 ms", "p99 ms", f"@{GATE_RATE:g}/s p99", "non-ok")
    ]  # fmt: skip
    for store, r in results.items():
        single, batch, paced = r.get("single", {}), r.get("batch", {}), r.get("paced", {})
        gate_, gate_paced = r.get("gate", {}), r.get("gate_paced", {})
        non_ok = sum(
            x.get("sent", 0) - x.get("ok", 0) for x in (single, batch, paced, gate_, gate_paced)
        )
        rows.append(
            (
                store,
                figure(single.get("rate_per_s")),
                figure(single.get("p50_ms")),
                figure(single.get("p99_ms")),
                figure(batch.get("rate_per_s")),
                figure(paced.get("p50_ms")),
                figure(paced.get("p99_ms")),
                figure(r.get("catch_up", {}).get("events_per_s")),
                figure(gate_.get("rate_per_s")),
                figure(gate_.get("p50_ms")),
                figure(gate_.get("p99_ms")),
                figure(gate_paced.get("p99_ms")),
                str(non_ok),
            )
        )
    return render_table(rows)
