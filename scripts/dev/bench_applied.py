"""`make bench` section `applied`: deliveries fully applied, end to end, with
stage two and the projections in the API's process ("one process") and beside it
in processes of their own ("make run"), one after the other on fresh stores.

A burst of COUNT deliveries (default 20,000) over CONCURRENCY connections; the
figure is COUNT divided by the time from the first delivery sent to the moment
stage two has settled every receipt and every projection has applied
everything in the log. Alongside: the webhooks' p99 under the burst, and the
p99 of GET /api/stripe/get-subscription asked 50 times a second meanwhile."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.utils import get_topic

from ledger.store.library import datastore_of, events_table_name
from scripts.dev import loadgen
from scripts.dev.bench_projections import _http, _lag
from scripts.dev.common import each_mode, figure, open_store, render_table

READ_EVERY = 0.02  # seconds between two reads during the burst
USER = "user_1767225600_appliedab1"


def bench_applied(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    """Per mode (`MODES`): the first on `database_url`, the next on a fresh store."""
    return each_mode(
        database_url, store, lambda url, env, mode: _applied(url, store, env, mode, opts)
    )


def _applied(
    database_url: str, store: str, mode_env: dict[str, str], mode: str, opts: Any
) -> dict[str, Any]:
    from ledger.domain.receipt import Receipt

    burst = loadgen.build_deliveries(opts.count, prefix="applied")
    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={
            **mode_env,
            "LEDGER_RATE_LIMIT_PER_USER": "1000000/minute",
            "LEDGER_RATE_LIMIT_PER_ADDRESS": "100000000/minute",
        },
        log_path=log_dir / f"applied-{store}-{mode.replace(' ', '-')}.log",
    )
    ledger = open_store(database_url)
    reads: list[float] = []
    stop = threading.Event()
    try:
        port = server.port
        _, body = _http(
            port,
            "POST",
            "/api/users",
            json.dumps({"user_id": USER}).encode(),
            {"Content-Type": "application/json"},
        )
        auth = {"X-User-ID": USER, "Authorization": f"Bearer {json.loads(body)['token']}"}

        def read_meanwhile() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                _http(port, "GET", "/api/stripe/get-subscription", None, auth)
                reads.append(time.perf_counter() - started)
                stop.wait(READ_EVERY)

        reader = threading.Thread(target=read_meanwhile)
        requests = loadgen.build_requests(burst, port)
        print(f"  {opts.count} deliveries, {opts.concurrency} connections ...", flush=True)
        reader.start()
        started = time.perf_counter()
        run = loadgen.run_load_sync(
            requests, port, concurrency=opts.concurrency, time_limit=opts.time_limit
        )
        answered = time.perf_counter()
        # Every receipt is in the log now: the last one's position is where stage two ends.
        last = _last_of(ledger, get_topic(Receipt.Received))
        deadline = answered + opts.stage_two_timeout
        while time.perf_counter() < deadline:
            if (ledger.recorder.max_tracking_id("Ledger") or 0) >= last and _lag(port) == 0:
                break
            time.sleep(0.05)
        done = time.perf_counter()
        stop.set()
        reader.join()
        finished = done < deadline
    finally:
        stop.set()
        server.stop()
        ledger.close()
    reads.sort()
    ingest = run.summary()
    return {
        "count": opts.count,
        "ok": ingest["ok"],
        "finished": finished,
        "answered_s": round(answered - started, 2),
        "applied_s": round(done - started, 2),
        "applied_per_s": round(ingest["ok"] / (done - started), 1),
        "webhook_p99_ms": ingest["p99_ms"],
        "reads": len(reads),
        "read_p99_ms": round((loadgen.percentile(reads, 99) or 0) * 1000, 1),
    }


def _last_of(ledger: Any, topic: str) -> int:
    """The position of the log's last event of `topic`, in one query (reading them
    all would cost the server and this process within the time measured)."""
    recorder = ledger.recorder
    table = events_table_name(recorder)
    postgres = isinstance(recorder, PostgresProcessRecorder)
    position = "notification_id" if postgres else "rowid"
    marker = "%s" if postgres else "?"
    with datastore_of(recorder).transaction(commit=False) as c:
        c.execute(f"SELECT MAX({position}) AS last FROM {table} WHERE topic = {marker}", (topic,))  # noqa: S608
        return c.fetchone()["last"] or 0


def table_applied(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "store",
            "mode",
            "deliveries",
            "answered s",
            "all applied s",
            "applied/s",
            "webhook p99 ms",
            "read p99 ms",
        )
    ]
    for store, modes in results.items():
        for mode, r in modes.items():
            rows.append(
                (
                    store,
                    mode,
                    figure(r.get("ok")),
                    figure(r.get("answered_s")),
                    figure(r.get("applied_s"))
                    + ("" if r.get("finished", True) else " (unfinished)"),
                    figure(r.get("applied_per_s")),
                    figure(r.get("webhook_p99_ms")),
                    figure(r.get("read_p99_ms")),
                )
            )
    return render_table(rows)
