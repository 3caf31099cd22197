"""Benchmark sections `audit` (the seal, and "as of" at the speed of one user)
and `encryption` (what encrypting personal data costs stage one).

Section `audit`:

1. Seal lag: receipts recorded at PACED_RATE/s for PACED_SECONDS (stage two
   and every projection following, in this process, as `make run` does); for
   each write, the time from its commit until the seal covers it: p50/p99/max.
2. A synthetic log of 1,000,000 events (scripts/dev/synthetic.py, written in
   large transactions); the ownership projection built over it; the seal over
   it (events/s) and `verify` of it (events/s).
3. As of, for SAMPLES users picked across the log: `replay_user` through the
   ownership index: p50/p99/max; and once by scanning the whole log, to compare.

Section `encryption`: see `bench_encryption`.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

from scripts.dev.common import figure, open_store, render_table
from scripts.dev.synthetic import fill, user_id

SIZE = 1_000_000
SAMPLES = 50
PACED_RATE = 500  # receipts/s
PACED_SECONDS = 10
T0 = 1_767_225_600


def bench_audit(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    from ledger.plans import load_catalog
    from projections.as_of import replay_user
    from projections.read_side import ReadSide

    ledger = open_store(database_url)
    catalog = load_catalog()
    result: dict[str, Any] = {}
    try:
        result["seal_lag"] = _seal_lag(ledger, catalog, database_url)
        print(f"  filling the log to {SIZE:,} events ...", flush=True)
        started = time.perf_counter()
        customers = 100_000  # past the ids the lag step used
        while (ledger.recorder.max_notification_id() or 0) < SIZE:
            fill(ledger, customers=1000, start=customers)
            customers += 1000
        result["fill_s"] = round(time.perf_counter() - started, 1)
        head = ledger.recorder.max_notification_id()
        result["log_events"] = head
        read = ReadSide(ledger, catalog, database_url, names=["ownership"])
        try:
            started = time.perf_counter()
            indexed = read.catchup.catch_up(read.projections[0], batch_size=5000)
            result["ownership_events_per_s"] = round(indexed / (time.perf_counter() - started))
            started = time.perf_counter()
            sealed = read.seal.run_once()
            result["seal_events_per_s"] = round(sealed / (time.perf_counter() - started))
            started = time.perf_counter()
            verdict = read.seal.verify()
            assert verdict.ok, str(verdict)
            result["verify_events_per_s"] = round(verdict.events / (time.perf_counter() - started))
            now = datetime.now(UTC)
            picked = random.Random(7).sample(range(100_000, customers), SAMPLES)
            times = []
            for n in picked:
                started = time.perf_counter()
                answer = replay_user(ledger, catalog, user_id(n), now, read.owners)
                times.append(time.perf_counter() - started)
                assert answer["invoices"], user_id(n)
            times.sort()
            result["as_of_ms"] = {
                "p50": round(statistics.median(times) * 1000, 1),
                "p99": round(times[int(len(times) * 0.99) - 1] * 1000, 1),
                "max": round(times[-1] * 1000, 1),
            }
            started = time.perf_counter()
            replay_user(ledger, catalog, user_id(picked[0]), now, None)
            result["as_of_scan_ms"] = round((time.perf_counter() - started) * 1000, 1)
        finally:
            read.close()
    finally:
        ledger.close()
    return result


def _seal_lag(ledger: Any, catalog: Any, database_url: str) -> dict[str, Any]:
    """Receipts at a steady rate; the seal follows in the projections' thread."""
    from ledger.stripe.payloads import read_delivery
    from projections.read_side import ReadSide

    read = ReadSide(ledger, catalog, database_url, interval=0.5)
    committed: dict[int, float] = {}
    lags: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() or committed:
            position = read.seal.position()
            now = time.perf_counter()
            for p in [p for p in committed if p <= position]:
                lags.append(now - committed.pop(p))
            time.sleep(0.002)
            if stop.is_set() and time.perf_counter() - last[0] > 30:
                return

    last = [time.perf_counter()]
    watcher = threading.Thread(target=watch, daemon=True)
    read.follower.start()
    watcher.start()
    per_write = 10
    interval = per_write / PACED_RATE
    n = 0
    deadline = time.perf_counter() + PACED_SECONDS
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            deliveries = [read_delivery(_body(n + i)) for i in range(per_write)]
            n += per_write
            positions = ledger.record(deliveries)
            committed[positions[-1]] = time.perf_counter()
            ledger.process_new()
            read.follower.wake()
            time.sleep(max(0.0, interval - (time.perf_counter() - started)))
        last[0] = time.perf_counter()
        stop.set()
        watcher.join(timeout=40)
    finally:
        read.close()
    lags.sort()
    return {
        "receipts": n,
        "rate": PACED_RATE,
        "achieved_rate": round(n / PACED_SECONDS),
        "p50_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
        "p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1) if lags else None,
        "max_ms": round(lags[-1] * 1000, 1) if lags else None,
    }


def _body(n: int) -> bytes:
    customer = {
        "id": f"cus_lag{n}",
        "object": "customer",
        "email": f"{n}@example.com",
        "name": f"Ada {n}",
        "metadata": {"user_id": user_id(n)},
    }
    envelope = {
        "id": f"evt_lag{n}",
        "object": "event",
        "type": "customer.created",
        "created": T0 + n,
        "api_version": "2026-07-29.dahlia",
        "livemode": False,
        "data": {"object": customer},
    }
    return json.dumps(envelope).encode()


def table_audit(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "store",
            "log events",
            "as of p50 ms",
            "p99 ms",
            "max ms",
            "as of by scan ms",
            "seal lag p50 ms",
            "p99 ms",
            "seal ev/s",
            "verify ev/s",
            "ownership ev/s",
        )
    ]
    for store, r in results.items():
        lag, as_of = r.get("seal_lag", {}), r.get("as_of_ms", {})
        rows.append(
            (
                store,
                figure(r.get("log_events")),
                figure(as_of.get("p50")),
                figure(as_of.get("p99")),
                figure(as_of.get("max")),
                figure(r.get("as_of_scan_ms")),
                figure(lag.get("p50_ms")),
                figure(lag.get("p99_ms")),
                figure(r.get("seal_events_per_s")),
                figure(r.get("verify_events_per_s")),
                figure(r.get("ownership_events_per_s")),
            )
        )
    return render_table(rows)


# --- section: encryption -------------------------------------------------------------

ROUNDS = 10
PER_ROUND = 1000
GROUP = 32  # deliveries per transaction, as the group committer writes them under load


def bench_encryption(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    """Stage one's write, `Ledger.record` in groups of GROUP, with personal data
    stored as it comes (A) and encrypted (B), alternating A and B rounds of
    PER_ROUND deliveries in one run on one store: deliveries/s of each. The
    customers' keys are made first (timed apart: a new customer's first
    delivery costs one more transaction, for its key)."""
    from ledger.personal import PersonalData, Plain
    from ledger.store.keys import KeyTable
    from ledger.store.url import Store
    from ledger.stripe.payloads import read_delivery
    from scripts.dev.loadgen import build_deliveries

    ledger = open_store(database_url)
    modes = {
        "plain": Plain(),
        "encrypted": PersonalData(
            KeyTable(ledger.recorder, is_postgres=Store(database_url).is_postgres),
            "bench-master-key-" + "x" * 32,
        ),
    }
    deliveries = [read_delivery(b) for _, b in build_deliveries(ROUNDS * 2 * PER_ROUND)]
    spent = dict.fromkeys(modes, 0.0)
    subjects = sorted({d.data_subject for d in deliveries if d.data_subject})
    try:
        started = time.perf_counter()
        for i in range(0, len(subjects), GROUP):  # as groups of new customers would
            modes["encrypted"].prepare(subjects[i : i + GROUP])
        keys_s = time.perf_counter() - started
        chunks = iter(range(0, len(deliveries), PER_ROUND))
        for r in range(ROUNDS):
            for name in ("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain"):
                start = next(chunks)
                chunk = deliveries[start : start + PER_ROUND]
                ledger.personal = modes[name]
                started = time.perf_counter()
                for i in range(0, len(chunk), GROUP):
                    ledger.record(chunk[i : i + GROUP])
                spent[name] += time.perf_counter() - started
    finally:
        ledger.close()
    rates = {name: round(ROUNDS * PER_ROUND / s) for name, s in spent.items()}
    return {
        "deliveries_per_mode": ROUNDS * PER_ROUND,
        "plain_per_s": rates["plain"],
        "encrypted_per_s": rates["encrypted"],
        "cost_pct": round((spent["encrypted"] / spent["plain"] - 1) * 100, 1),
        "keys": len(subjects),
        "keys_per_s": round(len(subjects) / keys_s),
    }


def table_encryption(results: dict[str, dict[str, Any]]) -> str:
    rows = [("store", "deliveries each", "plain /s", "encrypted /s", "cost %", "new keys /s")]
    for store, r in results.items():
        rows.append(
            (
                store,
                figure(r.get("deliveries_per_mode")),
                figure(r.get("plain_per_s")),
                figure(r.get("encrypted_per_s")),
                figure(r.get("cost_pct")),
                figure(r.get("keys_per_s")),
            )
        )
    return render_table(rows)


INGEST_ROUNDS = 3  # pairs, alternating which goes first
INGEST_PER_ROUND = 6000


def bench_ingest_encryption(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    """The whole ingest path (HTTP, signature, parse, write; stage two off), the
    server as `ledger serve` runs it (encrypted) and with personal data as it
    comes (`scripts/dev/serve_plain.py`), alternating on one store with new
    deliveries each time: deliveries/s and server CPU per delivery of each."""
    import sys

    from scripts.dev import loadgen

    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    programs = {
        "plain": [sys.executable, "-m", "scripts.dev.serve_plain"],
        "encrypted": None,
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in programs}
    k = 0
    for r in range(INGEST_ROUNDS):
        for name in ("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain"):
            k += 1
            deliveries = loadgen.build_deliveries(INGEST_PER_ROUND + 500, prefix=f"enc{k}")
            server = loadgen.start_server(
                database_url,
                env_extra={"LEDGER_PROCESSOR": "off", "LEDGER_PROJECTIONS": "off"},
                log_path=log_dir / f"ingest-encryption-{store}.log",
                program=programs[name],
            )
            try:
                warm = loadgen.build_requests(deliveries[:500], server.port)
                loadgen.run_load_sync(warm, server.port, concurrency=8)
                requests = loadgen.build_requests(deliveries[500:], server.port)
                cpu0 = server.cpu_seconds() or 0.0
                run = loadgen.run_load_sync(requests, server.port, concurrency=opts.concurrency)
                cpu = (server.cpu_seconds() or 0.0) - cpu0
            finally:
                server.stop()
            summary = run.summary()
            if summary["ok"] != INGEST_PER_ROUND:
                raise RuntimeError(f"{name}: {summary}")
            runs[name].append({"per_s": summary["rate_per_s"], "cpu_us": cpu / summary["ok"] * 1e6})
            print(f"  round {r + 1} {name}: {runs[name][-1]}", flush=True)
    median = {
        name: {f: statistics.median(x[f] for x in rs) for f in ("per_s", "cpu_us")}
        for name, rs in runs.items()
    }
    return {
        "rounds": runs,
        "median": median,
        "cpu_cost_pct": round(
            100 * (median["encrypted"]["cpu_us"] / median["plain"]["cpu_us"] - 1), 1
        ),
        "rate_cost_pct": round(
            100 * (1 - median["encrypted"]["per_s"] / median["plain"]["per_s"]), 1
        ),
    }


def table_ingest_encryption(results: dict[str, dict[str, Any]]) -> str:
    rows = [("store", "plain /s", "encrypted /s", "cost %", "plain CPU µs", "encrypted", "cost %")]
    for store, r in results.items():
        m = r.get("median", {})
        rows.append(
            (
                store,
                figure(m.get("plain", {}).get("per_s")),
                figure(m.get("encrypted", {}).get("per_s")),
                figure(r.get("rate_cost_pct")),
                figure(m.get("plain", {}).get("cpu_us")),
                figure(m.get("encrypted", {}).get("cpu_us")),
                figure(r.get("cpu_cost_pct")),
            )
        )
    return render_table(rows)
