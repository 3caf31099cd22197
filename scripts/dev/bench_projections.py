"""Benchmark sections of the read side.

`rebuild`: a synthetic log (receipts, customers, subscriptions, invoices written
straight through the aggregates) of 100,000 then 1,000,000 events; `ledger
projections rebuild` of every projection (one pass over the log), as a process
of its own: events applied per projection, wall time of the whole process, log
events/s over it, and the rebuild process's peak RSS (flat in the number of
events when the rebuild streams).

`freshness`: `ledger serve` with stage two and the projections in-process
(single-process mode): (1) the time from a webhook answered 200 to the first
GET /api/stripe/get-subscription that shows it, sequentially for SAMPLES users;
(2) projection lag (log head minus position) sampled while a burst of deliveries
is ingested, and how long after the burst the projections are caught up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from typing import Any

from eventsourcing.postgres import PostgresProcessRecorder

from ledger.store.library import datastore_of, events_table_name
from scripts.dev import loadgen
from scripts.dev.common import each_mode, figure, open_store, render_table
from scripts.dev.synthetic import fill

SIZES = (100_000, 1_000_000)
SAMPLES = 200
BURST = 10_000
LINE = re.compile(r"^(\w+): ([\d,]+) events, swapped in")
TOTAL = re.compile(r"^rebuilt: ([\d,]+) log events in ([\d.]+) s \(([\d,]+) events/s")
PROCESSES = re.compile(r"(\d+) processes read")


def bench_rebuild(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    ledger = open_store(database_url)
    written = customers = 0
    try:
        for size in SIZES:
            print(f"  filling the log to {size:,} events ...", flush=True)
            started = time.perf_counter()
            while written < size:
                batch = fill(ledger, customers=1000, start=customers)
                customers += 1000
                written += batch
            fill_s = time.perf_counter() - started
            _settle(ledger)
            head = ledger.recorder.max_notification_id()
            print(f"  rebuild of every projection over {head:,} events ...", flush=True)
            result[str(size)] = {
                "log_events": head,
                "fill_s": round(fill_s, 1),
                **_rebuild_process(database_url),
            }
    finally:
        ledger.close()
    return result


def _settle(ledger: Any) -> None:
    """The freshly filled log as a long-lived one is (PostgreSQL: vacuumed,
    analysed, checkpointed), outside the time measured: otherwise autovacuum and
    the checkpoint after a fill of 900,000 rows run during the rebuild and share
    its two cores."""
    recorder = ledger.recorder
    if not isinstance(recorder, PostgresProcessRecorder):
        return
    with datastore_of(recorder).get_connection() as conn:  # autocommit, as VACUUM needs
        conn.execute(f"VACUUM (ANALYZE) {events_table_name(recorder)}")
        conn.execute("CHECKPOINT")


def _rebuild_process(database_url: str) -> dict[str, Any]:
    env = loadgen.server_env(database_url)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*loadgen.ledger_command(), "projections", "rebuild"],
        env=env,
        cwd=loadgen.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    err = process.stderr.read() if process.stderr else ""
    if status != 0:
        raise RuntimeError(f"rebuild failed: {err[-2000:]}")
    per: dict[str, Any] = {}
    read = 0
    for line in err.splitlines():
        if m := LINE.match(line.strip()):
            per[m[1]] = {"events": int(m[2].replace(",", ""))}
        elif m := TOTAL.match(line.strip()):
            read = int(m[1].replace(",", ""))
    applied = sum(p["events"] for p in per.values())
    processes = PROCESSES.search(err)
    return {
        "projections": per,
        "events_applied": applied,
        "log_events_read": read,
        "processes": int(processes[1]) if processes else 1,
        "wall_s": round(wall, 1),  # the whole process: start-up, one pass, writes, swap
        "log_events_per_s": round(read / wall),
        "applied_per_s": round(applied / wall),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # of the largest process
    }


def table_rebuild(results: dict[str, dict[str, Any]]) -> str:
    names = (
        "subscription_status",
        "entitlements",
        "invoice_history",
        "notifications",
        "webhook_health",
    )
    rows = [
        (
            "store",
            "log events",
            *(f"{n} ev" for n in names),
            "processes",
            "wall s",
            "log ev/s",
            "peak RSS MiB",
        )
    ]
    for store, r in results.items():
        for size in SIZES:
            x = r.get(str(size), {})
            per = x.get("projections", {})
            rows.append(
                (
                    store,
                    figure(x.get("log_events")),
                    *(figure(per.get(n, {}).get("events")) for n in names),
                    figure(x.get("processes")),
                    figure(x.get("wall_s")),
                    figure(x.get("log_events_per_s")),
                    figure(x.get("peak_rss_mib")),
                )
            )
    return render_table(rows)


# --- freshness ------------------------------------------------------------------------


def _http(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def bench_freshness(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    """Per mode (`MODES`): the first on `database_url`, the next on a fresh store."""
    return each_mode(
        database_url, store, lambda url, env, mode: _freshness(url, store, env, mode, opts)
    )


def _freshness(
    database_url: str, store: str, mode_env: dict[str, str], mode: str, opts: Any
) -> dict[str, Any]:
    so = loadgen._stripe_objects()
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={
            **mode_env,
            "LEDGER_RATE_LIMIT_PER_USER": "1000000/minute",
            "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000000/minute",
            "LEDGER_RATE_LIMIT_REGISTRATION": "100000/minute",
        },
        log_path=log_dir / f"freshness-{store}-{mode.replace(' ', '-')}.log",
    )
    result: dict[str, Any] = {}
    try:
        port = server.port
        print(f"  webhook -> get-subscription, {SAMPLES} users one after another ...", flush=True)
        delays = []
        for n in range(SAMPLES):
            user = f"user_1767225600_fresh{n:05d}"
            status, body = _http(
                port,
                "POST",
                "/api/users",
                json.dumps({"user_id": user}).encode(),
                {"Content-Type": "application/json"},
            )
            if status != 201:
                raise RuntimeError(f"registering {user}: {status} {body[:200]!r}")
            auth = {"X-User-ID": user, "Authorization": f"Bearer {json.loads(body)['token']}"}
            event = so.event(
                f"evt_fresh{n}",
                "customer.subscription.created",
                so.subscription(f"sub_fresh{n}", f"cus_fresh{n}", user_id=user),
                created=1_767_225_600 + n,
            )
            payload = so.body_of(event)
            status, answer = _http(
                port,
                "POST",
                "/webhooks/stripe",
                payload,
                {"Stripe-Signature": so.sign(payload, loadgen.DEFAULT_SECRET)},
            )
            answered = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"webhook answered {status}: {answer[:200]!r}")
            while True:
                _, body = _http(port, "GET", "/api/stripe/get-subscription", None, auth)
                if json.loads(body).get("active"):
                    delays.append(time.perf_counter() - answered)
                    break
                if time.perf_counter() - answered > 5:
                    delays.append(float("inf"))
                    break
                time.sleep(0.002)
        delays.sort()
        result["reflect"] = {
            "samples": SAMPLES,
            "p50_ms": _ms(delays, 50),
            "p99_ms": _ms(delays, 99),
            "max_ms": round(delays[-1] * 1000, 1),
        }

        print(f"  projection lag during a burst of {BURST} deliveries ...", flush=True)
        samples: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                samples.append(_lag(port))
                stop.wait(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        run = loadgen.run_load_sync(
            loadgen.build_requests(loadgen.build_deliveries(BURST, prefix="lag"), port),
            port,
            concurrency=opts.concurrency,
            time_limit=opts.time_limit,
        )
        burst_end = time.perf_counter()
        while _lag(port) > 0 and time.perf_counter() - burst_end < 300:
            time.sleep(0.1)
        drained = time.perf_counter() - burst_end
        stop.set()
        watcher.join()
        result["lag"] = {
            "ingest": run.summary(),
            "max_lag_events": max(samples, default=0),
            "caught_up_after_burst_s": round(drained, 1),
        }
    finally:
        server.stop()
    return result


def _lag(port: int) -> int:
    _, body = _http(
        port, "GET", "/api/v1/audit/projections", None, {"Authorization": "Bearer adm_loadgen"}
    )
    return max(p["lag"] for p in json.loads(body))


def _ms(values: list[float], p: float) -> float:
    return round(loadgen.percentile(values, p) * 1000, 1)  # type: ignore[operator]


def table_freshness(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "store",
            "mode",
            "reflect p50 ms",
            "p99 ms",
            "max ms",
            "ingest/s",
            "max lag (events)",
            "caught up after s",
        )
    ]
    for store, modes in results.items():
        for mode, r in modes.items():
            reflect, lag = r.get("reflect", {}), r.get("lag", {})
            rows.append(
                (
                    store,
                    mode,
                    figure(reflect.get("p50_ms")),
                    figure(reflect.get("p99_ms")),
                    figure(reflect.get("max_ms")),
                    figure(lag.get("ingest", {}).get("rate_per_s")),
                    figure(lag.get("max_lag_events")),
                    figure(lag.get("caught_up_after_burst_s")),
                )
            )
    return render_table(rows)
