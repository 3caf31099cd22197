"""Benchmarks of the real service, on loopback: `python -m scripts.dev.bench` (`make bench`).

Each section is a function in SECTIONS, run once per store on a store of its
own (SQLite in a temp dir, or a fresh PostgreSQL database dropped afterwards).
It prints a table and writes its figures to var/bench/<section>-<store>.json.

    python -m scripts.dev.bench                              # every section, both stores
    python -m scripts.dev.bench --only webhooks --stores postgres --count 5000

Section `webhooks` (webhook ingest, stage one then stage two):
1. `ledger serve` with LEDGER_PROCESSOR=off (and LEDGER_PROJECTIONS=off unless
   `--projections inline`); a short warm-up; then COUNT signed
   deliveries over CONCURRENCY keep-alive connections as fast as it answers:
   deliveries/s, p50/p99 latency, the server's CPU time;
2. PACED_COUNT more, paced at PACED_RATE/s (open loop): p50/p99 at that rate;
   then the server's peak RSS (VmHWM);
3. stage two on everything recorded: `ledger process` (default) or the server
   restarted with LEDGER_PROCESSOR=inline (`--stage-two inline`), timed until
   its tracking position reaches the last receipt: receipts/s.
Every step is bounded in time; a step that runs out reports what it got.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts.dev import (
    bench_applied,
    bench_audit,
    bench_gate,
    bench_peer,
    bench_projections,
    bench_reads,
    bench_usage,
    loadgen,
)
from scripts.dev.common import PG_ADMIN, STORES, figure, open_store, render_table, store_database

OUT_DIR = loadgen.ROOT / "var" / "bench"


@dataclass(frozen=True)
class Options:
    count: int = 20_000
    concurrency: int = 32
    paced_rate: float = 1000.0
    paced_count: int = 10_000
    warmup: int = 500
    time_limit: float = 120.0  # seconds, for each load run
    stage_two: str = "process"  # or "inline"
    # The server's own projections follower (LEDGER_PROJECTIONS); "off" keeps the
    # ingest figures about stage one alone, as `ledger projections run` would in production.
    projections: str = "off"
    stage_two_timeout: float = 300.0
    out_dir: Path = OUT_DIR
    workers: int = 1  # `ledger serve --workers` in the `peer` section


# --- section: webhooks ------------------------------------------------------------


def bench_webhooks(database_url: str, store: str, opts: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"cpu_busy_before_pct": cpu_busy()}
    if (result["cpu_busy_before_pct"] or 0) > 15:
        print(
            f"  warning: {result['cpu_busy_before_pct']}% of the CPU is busy before the run:"
            " something else is competing for the cores, figures will be low",
            flush=True,
        )
    total = opts.warmup + opts.count + opts.paced_count
    print(f"  building {total} deliveries ...", flush=True)
    warm = loadgen.build_deliveries(opts.warmup, prefix="warm")
    burst = loadgen.build_deliveries(opts.count, prefix="burst")
    paced = loadgen.build_deliveries(opts.paced_count, prefix="paced")

    log_dir = opts.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = loadgen.start_server(
        database_url,
        env_extra={"LEDGER_PROCESSOR": "off", "LEDGER_PROJECTIONS": opts.projections},
        log_path=log_dir / f"serve-{store}.log",
    )
    try:
        if warm:
            loadgen.run_load_sync(
                loadgen.build_requests(warm, server.port), server.port, concurrency=8
            )
        cpu0, own0 = server.cpu_seconds() or 0.0, _own_cpu()
        print(f"  ingest: {opts.count} deliveries, {opts.concurrency} connections ...", flush=True)
        run = loadgen.run_load_sync(
            loadgen.build_requests(burst, server.port),
            server.port,
            concurrency=opts.concurrency,
            time_limit=opts.time_limit,
        )
        result["ingest"] = run.summary()
        result["ingest"]["server_cpu_s"] = round((server.cpu_seconds() or 0.0) - cpu0, 2)
        result["ingest"]["loadgen_cpu_s"] = round(_own_cpu() - own0, 2)

        if opts.paced_count:
            print(
                f"  paced: {opts.paced_count} deliveries at {opts.paced_rate:g}/s ...", flush=True
            )
            cpu0 = server.cpu_seconds() or 0.0
            run = loadgen.run_load_sync(
                loadgen.build_requests(paced, server.port),
                server.port,
                concurrency=opts.concurrency,
                rate=opts.paced_rate,
                time_limit=min(opts.time_limit, opts.paced_count / opts.paced_rate * 1.5 + 5),
            )
            result["paced"] = run.summary()
            result["paced"]["server_cpu_s"] = round((server.cpu_seconds() or 0.0) - cpu0, 2)
        result["server_peak_rss_mib"] = round((server.peak_rss_kib() or 0) / 1024, 1)
    finally:
        server.stop()

    result["stage_two"] = _stage_two(database_url, store, opts, log_dir)
    return result


def _stage_two(database_url: str, store: str, opts: Options, log_dir: Path) -> dict[str, Any]:
    from eventsourcing.utils import get_topic

    from ledger.domain.receipt import Receipt

    ledger = open_store(database_url)
    try:
        head = ledger.recorder.max_notification_id() or 0  # nothing but receipts so far
        out: dict[str, Any] = {"mode": opts.stage_two, "receipts": head}
        if not head:
            return out
        print(f"  stage two ({opts.stage_two}): {head} receipts ...", flush=True)
        log_path = log_dir / f"stage-two-{store}.log"
        if opts.stage_two == "inline":
            runner = loadgen.start_server(
                database_url,
                env_extra={
                    "LEDGER_PROCESSOR": "inline",
                    "LEDGER_PROCESSOR_INTERVAL": "0.05",
                    "LEDGER_PROJECTIONS": opts.projections,
                },
                log_path=log_path,
            )
        else:
            runner = loadgen.start_processor(database_url, log_path=log_path)
        started = time.perf_counter()
        first: tuple[float, int] | None = None
        position = 0
        cpu0 = 0.0
        try:
            deadline = started + opts.stage_two_timeout
            while time.perf_counter() < deadline and runner.alive():
                position = ledger.recorder.max_tracking_id("Ledger") or 0
                now = time.perf_counter()
                if first is None and position:
                    first = (now, position)
                    cpu0 = runner.cpu_seconds() or 0.0
                if position >= head:
                    break
                time.sleep(0.1)
            done = time.perf_counter()
            out["runner_cpu_s"] = round((runner.cpu_seconds() or 0.0) - cpu0, 2)
            out["runner_peak_rss_mib"] = round((runner.peak_rss_kib() or 0) / 1024, 1)
        finally:
            runner.stop()
        out["finished"] = position >= head
        out["processed"] = position  # positions 1..head are all receipts
        out["elapsed_s"] = round(done - started, 2)  # including the runner's start-up
        out["rate_per_s"] = round(position / (done - started), 1)
        if first is not None and done > first[0] and position > first[1]:
            # from its first tracked position on: the steady rate, start-up left out
            out["steady_rate_per_s"] = round((position - first[1]) / (done - first[0]), 1)
        failed = ledger.recorder.select_notifications(
            start=1, limit=100_000, topics=[get_topic(Receipt.AttemptFailed)]
        )
        out["failed_attempts"] = len(failed)
        out["events_written"] = (ledger.recorder.max_notification_id() or 0) - head
        return out
    finally:
        ledger.close()


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Percent of the machine's CPU in use over `seconds` (from /proc/stat): taken
    before a run, it tells whether something else was competing for the cores."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def table_webhooks(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "store",
            "ingest/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "non-200",
            "srv cpu s",
            "@rate p50",
            "@rate p99",
            "peak RSS MiB",
            "stage two",
            "s",
            "receipts/s",
        )
    ]
    for store, r in results.items():
        ingest, paced, two = r.get("ingest", {}), r.get("paced", {}), r.get("stage_two", {})
        non200 = ingest.get("sent", 0) - ingest.get("ok", 0) + ingest.get("not_sent", 0)
        rows.append(
            (
                store,
                figure(ingest.get("rate_per_s")),
                figure(ingest.get("p50_ms")),
                figure(ingest.get("p99_ms")),
                figure(ingest.get("max_ms")),
                str(non200),
                figure(ingest.get("server_cpu_s")),
                figure(paced.get("p50_ms")),
                figure(paced.get("p99_ms")),
                figure(r.get("server_peak_rss_mib")),
                f"{two.get('mode', '-')}{'' if two.get('finished', True) else ' (unfinished)'}",
                figure(two.get("elapsed_s")),
                figure(two.get("steady_rate_per_s", two.get("rate_per_s"))),
            )
        )
    return render_table(rows)


# --- the registry of sections -----------------------------------------------------


@dataclass(frozen=True)
class Section:
    run: Callable[[str, str, Options], dict[str, Any]]
    table: Callable[[dict[str, dict[str, Any]]], str]
    about: str


SECTIONS: dict[str, Section] = {
    "webhooks": Section(
        bench_webhooks,
        table_webhooks,
        "webhook ingest (deliveries/s, latency, RSS) and stage two (receipts/s)",
    ),
    "freshness": Section(
        bench_projections.bench_freshness,
        bench_projections.table_freshness,
        "webhook answered -> get-subscription shows it; projection lag under ingest",
    ),
    "reads": Section(
        bench_reads.bench_reads,
        bench_reads.table_reads,
        "GET /api/stripe/get-subscription, 10,000 users (requests/s, p50/p99)",
    ),
    "rebuild": Section(
        bench_projections.bench_rebuild,
        bench_projections.table_rebuild,
        "projections rebuild over 100,000 and 1,000,000 events (events/s, peak RSS)",
    ),
    "audit": Section(
        bench_audit.bench_audit,
        bench_audit.table_audit,
        "seal lag under ingest; as-of for one user, seal and verify over 1,000,000 events",
    ),
    "encryption": Section(
        bench_audit.bench_encryption,
        bench_audit.table_encryption,
        "stage one's write with personal data encrypted vs as it comes (A/B, one run)",
    ),
    "ingest-encryption": Section(
        bench_audit.bench_ingest_encryption,
        bench_audit.table_ingest_encryption,
        "the whole ingest path with personal data encrypted vs as it comes (A/B servers)",
    ),
    "peer": Section(
        bench_peer.bench_peer,
        bench_peer.table_peer,
        "ingest on PostgreSQL against Supabase's Stripe sync engine: interleaved rounds, ratios",
    ),
    "applied": Section(
        bench_applied.bench_applied,
        bench_applied.table_applied,
        "deliveries fully applied: a burst into `make run`, until every projection has it",
    ),
    "gate": Section(
        bench_gate.bench_gate,
        bench_gate.table_gate,
        "GET /api/v1/billing/entitlements/check, 10,000 users (checks/s, p50/p99)",
    ),
    "sse": Section(
        bench_gate.bench_sse,
        bench_gate.table_sse,
        "1,000 notification streams: webhook answered -> event on the stream; memory",
    ),
    "usage": Section(
        bench_usage.bench_usage,
        bench_usage.table_usage,
        "usage records: single (32 connections), batches of 1,000, p99 at 1,000/s; the gate",
    ),
}


# --- output -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),  # the machine may be shared: read figures with it
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=loadgen.ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgres"] = row[0] if row else None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.dev.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS)}",
    )
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite,postgres")
    parser.add_argument("--count", type=int, default=Options.count)
    parser.add_argument("--concurrency", type=int, default=Options.concurrency)
    parser.add_argument("--paced-rate", type=float, default=Options.paced_rate)
    parser.add_argument("--paced-count", type=int, default=Options.paced_count)
    parser.add_argument("--warmup", type=int, default=Options.warmup)
    parser.add_argument(
        "--time-limit", type=float, default=Options.time_limit, help="seconds, for each load run"
    )
    parser.add_argument("--stage-two", choices=("process", "inline"), default=Options.stage_two)
    parser.add_argument(
        "--projections",
        choices=("off", "inline"),
        default=Options.projections,
        help="LEDGER_PROJECTIONS of the benchmarked server",
    )
    parser.add_argument("--stage-two-timeout", type=float, default=Options.stage_two_timeout)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--workers", type=int, default=Options.workers, help="peer: API processes")
    args = parser.parse_args(argv)

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for name in sections:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
    for store in stores:
        if store not in STORES:
            parser.error(f"unknown store {store!r}; known: {', '.join(STORES)}")
    opts = Options(
        count=args.count,
        concurrency=args.concurrency,
        paced_rate=args.paced_rate,
        paced_count=args.paced_count,
        warmup=args.warmup,
        time_limit=args.time_limit,
        stage_two=args.stage_two,
        projections=args.projections,
        stage_two_timeout=args.stage_two_timeout,
        out_dir=args.out,
        workers=args.workers,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}")
    for name in sections:
        section = SECTIONS[name]
        print(f"\n== {name}: {section.about}")
        results: dict[str, dict[str, Any]] = {}
        for store in stores:
            print(f"-- {store}", flush=True)
            with store_database(store) as url:
                results[store] = section.run(url, store, opts)
            path = opts.out_dir / f"{name}-{store}.json"
            options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
            payload = {
                "section": name,
                "store": store,
                "machine": info,
                "options": options,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "results": results[store],
            }
            path.write_text(json.dumps(payload, indent=2) + "\n")
            shown = path.relative_to(loadgen.ROOT) if path.is_relative_to(loadgen.ROOT) else path
            print(f"  wrote {shown}")
        print()
        print(section.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
