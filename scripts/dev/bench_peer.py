"""`make bench` section `peer`: webhook ingest on PostgreSQL against Supabase's
Stripe sync engine (`@supabase/stripe-sync-engine`, Node), in one run.

The engine's kit (scripts/dev/peer/: its package.json, a node:http front and its
migration) is installed once with npm into a cache folder outside the repository
(LEDGER_BENCH_CACHE, default ~/.cache/ledger-bench/peer). Without `node` and
`npm` the section says so and is skipped: the project never needs Node.

Each round runs three contenders, in turn, on a fresh database of their own on
the same PostgreSQL, with the same freshly signed stream of deliveries, over the
same number of keep-alive connections: the engine; the bare floor
(`scripts/dev/bare_floor.py`: under the same uvicorn, verify the signature and
one autocommit INSERT per request); then `ledger serve` with its ingest path
alone (LEDGER_PROCESSOR=off, LEDGER_PROJECTIONS=off). Rounds are interleaved
(A B C A B C A B C), and the figures are each round's ratios, ours / the
engine's and ours / the floor's, and their medians: what the machine's other
load does to one run it does to its neighbours too."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.dev import loadgen
from scripts.dev.common import figure, render_table, store_database

KIT = Path(__file__).resolve().parent / "peer"
ROUNDS = 3


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "ledger-bench" / "peer"
    return Path(os.environ.get("LEDGER_BENCH_CACHE", default))


def install() -> Path | str:
    """The installed kit's folder, or why it cannot be used."""
    if not (shutil.which("node") and shutil.which("npm")):
        return "node and npm are not installed: section skipped (the project never needs them)"
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "server.mjs", "migrate.cjs"):
        source, target = KIT / name, folder / name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    if not (folder / "node_modules" / "@supabase" / "stripe-sync-engine").is_dir():
        print(f"  installing the engine into {folder} (once) ...", flush=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode:
            return f"npm install failed: {done.stderr.strip()[-300:]}"
    return folder


def bench_peer(database_url: str, store: str, opts: Any) -> dict[str, Any]:
    if store != "postgres":
        return {"skipped": "the engine runs on PostgreSQL only"}
    folder = install()
    if isinstance(folder, str):
        print(f"  {folder}", flush=True)
        return {"skipped": folder}
    rounds: list[dict[str, Any]] = []
    for n in range(1, ROUNDS + 1):
        round_: dict[str, Any] = {"round": n, "load_average": round(os.getloadavg()[0], 2)}
        for contender, start in STARTS.items():
            burst = loadgen.build_deliveries(opts.count, prefix=f"peer{n}{contender[0]}")
            with store_database("postgres") as url:
                print(f"  round {n}: {contender}, {opts.count} deliveries ...", flush=True)
                server = start(folder, url, opts)
                try:
                    round_[contender] = _ingest(server, burst, opts)
                finally:
                    server.stop()
        ours = round_["ledger"].get("rate_per_s")
        for key, other in (("ratio", "engine"), ("floor_ratio", "floor")):
            theirs = round_[other].get("rate_per_s")
            round_[key] = round(ours / theirs, 2) if theirs and ours else None
        print(
            f"  round {n}: ratio {figure(round_['ratio'])}, "
            f"to the floor {figure(round_['floor_ratio'])}",
            flush=True,
        )
        rounds.append(round_)
    return {
        "rounds": rounds,
        "median_ratio": _median([r["ratio"] for r in rounds]),
        "median_floor_ratio": _median([r["floor_ratio"] for r in rounds]),
        "workers": opts.workers,
    }


def _median(ratios: list[float | None]) -> float | None:
    known = [r for r in ratios if r]
    return round(statistics.median(known), 2) if known else None


def _ingest(server: loadgen.Server, burst: list[tuple[str, bytes]], opts: Any) -> dict[str, Any]:
    warm = loadgen.build_deliveries(min(opts.warmup, 500), prefix=f"warm{server.port}")
    if warm:
        loadgen.run_load_sync(loadgen.build_requests(warm, server.port), server.port, concurrency=8)
    cpu0 = server.cpu_seconds() or 0.0
    run = loadgen.run_load_sync(
        loadgen.build_requests(burst, server.port),
        server.port,
        concurrency=opts.concurrency,
        time_limit=opts.time_limit,
    )
    out = run.summary()
    out["server_cpu_s"] = round((server.cpu_seconds() or 0.0) - cpu0, 2)
    return {k: out[k] for k in ("ok", "sent", "rate_per_s", "p50_ms", "p99_ms", "server_cpu_s")}


def _start_ledger(folder: Path, url: str, opts: Any) -> loadgen.Server:
    return loadgen.start_server(
        url,
        env_extra={"LEDGER_PROCESSOR": "off", "LEDGER_PROJECTIONS": "off"},
        workers=opts.workers,
    )


def _start_floor(folder: Path, url: str, opts: Any) -> loadgen.Server:
    port = loadgen.free_port()
    env = loadgen.server_env(url)
    command = [sys.executable, "-m", "scripts.dev.bare_floor", "--port", str(port)]
    (opts.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    server = loadgen._spawn(command, env, opts.out_dir / "logs" / "peer-floor.log", port)
    return loadgen.wait_until_healthy(server, 30, "the bare floor")


def _start_engine(folder: Path, url: str, opts: Any) -> loadgen.Server:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WEBHOOK_SECRET": loadgen.DEFAULT_SECRET,
        "STUB_LINE_ITEMS": "1",
    }
    subprocess.run(
        ["node", "migrate.cjs"], cwd=folder, env=env, check=True, capture_output=True, timeout=120
    )
    port = loadgen.free_port()
    env["PORT"] = str(port)
    (opts.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    log = (opts.out_dir / "logs" / "peer-engine.log").open("wb")
    process = subprocess.Popen(
        ["node", "server.mjs"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = loadgen.Server(process, port, Path(log.name), log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.alive():
        with socket.socket() as s:
            if s.connect_ex((loadgen.HOST, port)) == 0:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"the engine did not start:\n{server.log_tail()}")


STARTS = {"engine": _start_engine, "floor": _start_floor, "ledger": _start_ledger}


def table_peer(results: dict[str, dict[str, Any]]) -> str:
    r = results.get("postgres", {})
    if "rounds" not in r:
        return "peer: " + str(r.get("skipped", "not run (PostgreSQL only)"))
    head = ("round", "engine/s", "p99 ms", "floor/s", "p99 ms", "ours/s", "p99 ms")
    rows = [(*head, "ours/engine", "ours/floor", "load avg")]
    for x in r["rounds"]:
        rates = [
            figure(x[c].get(k))
            for c in ("engine", "floor", "ledger")
            for k in ("rate_per_s", "p99_ms")
        ]
        ratios = (figure(x["ratio"]), figure(x.get("floor_ratio")), figure(x["load_average"]))
        rows.append((str(x["round"]), *rates, *ratios))
    medians = (figure(r["median_ratio"]), figure(r.get("median_floor_ratio")), "")
    rows.append(("median", "", "", "", "", "", "", *medians))
    return render_table(rows) + f"\n(ours: ingest path alone, {r['workers']} worker(s))"
