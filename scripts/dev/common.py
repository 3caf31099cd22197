"""What the benchmark sections share: the ledger opened on the store under test,
the closed-loop and paced runs of the read sections, and their tables' cells and
layout."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from scripts.dev import loadgen

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
STORES = ("sqlite", "postgres")


@contextlib.contextmanager
def store_database(store: str) -> Iterator[str]:
    """A DATABASE_URL on an empty store of its own, removed afterwards."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
            yield f"sqlite:///{tmp}/ledger.db"
        return
    if store != "postgres":
        raise SystemExit(f"unknown store {store!r} (use {', '.join(STORES)})")
    import psycopg

    name = f"ledger_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_store(database_url: str) -> Any:
    """The ledger opened in this process, to read positions and receipts."""
    from pydantic import SecretStr

    from ledger.config import Settings
    from ledger.opening import open_ledger

    settings = Settings(
        DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=SecretStr(loadgen.DEFAULT_SECRET),
        LEDGER_ADMIN_TOKEN=SecretStr("adm_bench"),
        LEDGER_MASTER_KEY=SecretStr(loadgen.MASTER_KEY),
        LEDGER_PROCESSOR="off",
    )  # type: ignore[call-arg]
    return open_ledger(settings, pool_size=1)


def figure(value: Any) -> str:
    """A table cell: "-" for a missing figure, floats to one decimal."""
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def render_table(rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned columns (the first left, the others right), the first row
    the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


ROUNDS = 3  # runs of the same requests on this machine differ by up to 2x


def closed_and_paced(
    server: loadgen.Server,
    make: Callable[[int, int], list[bytes]],
    *,
    ok: Callable[[dict[str, Any]], dict[str, Any]],
    concurrency: int,
    time_limit: float,
    count: int,
    rate: float,
    seconds: float,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """On one warm server, `rounds` alternating pairs: a closed loop of `count`
    requests (server CPU measured), then `rate`/s paced for `seconds`. `make(count,
    seed)` builds the requests; `ok` adds `rate_per_s` of the answers that count.
    Every run is kept; the figure of each kind is its median run (by rate for the
    closed loop, by p99 paced)."""
    closed, paced = [], []
    for n in range(rounds):
        print(f"  round {n + 1}: closed loop, {count} requests, {concurrency} connections; "
              f"paced {rate:g}/s for {seconds:g} s ...", flush=True)  # fmt: skip
        cpu0 = server.cpu_seconds() or 0.0
        run = loadgen.run_load_sync(
            make(count, 7 + n), server.port, concurrency=concurrency, time_limit=time_limit
        )
        summary = ok(run.summary())
        summary["server_cpu_s"] = round((server.cpu_seconds() or 0.0) - cpu0, 2)
        closed.append(summary)
        run = loadgen.run_load_sync(
            make(int(rate * seconds), 100 + n), server.port, concurrency=concurrency,
            rate=rate, time_limit=seconds * 1.5 + 5,
        )  # fmt: skip
        paced.append(ok(run.summary()))
        print(f"    {closed[-1]['rate_per_s']:,.0f}/s (p99 {closed[-1]['p99_ms']} ms); "
              f"paced p99 {paced[-1]['p99_ms']} ms", flush=True)  # fmt: skip
    return {
        "closed": median_run(closed, "rate_per_s"),
        "paced": median_run(paced, "p99_ms"),
        "closed_runs": closed,
        "paced_runs": paced,
    }


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the lower middle of an even count)."""
    ordered = sorted(runs, key=lambda r: r.get(key) or 0)
    return ordered[(len(ordered) - 1) // 2]


# Where the API's stage two and projections run: in threads of the API's own
# process, or (`make run`) in processes of their own beside it
# (LEDGER_PROCESSOR / LEDGER_PROJECTIONS). The sections that measure the two
# side by side take each in turn.
MODES = {
    "one process": {"LEDGER_PROCESSOR": "inline", "LEDGER_PROJECTIONS": "inline"},
    "make run": {"LEDGER_PROCESSOR": "process", "LEDGER_PROJECTIONS": "process"},
}


def each_mode(
    database_url: str, store: str, measure: Callable[[str, dict[str, str], str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`measure(url, env, mode)` for each of MODES: the first on `database_url`,
    each next one on a fresh store of its own."""
    results = {}
    for n, (mode, env) in enumerate(MODES.items()):
        print(f"  {mode}:", flush=True)
        if n == 0:
            results[mode] = measure(database_url, env, mode)
            continue
        with store_database(store) as url:
            results[mode] = measure(url, env, mode)
    return results
