"""Scale-out, as processes, on PostgreSQL: two API processes, two `ledger process`
and two `ledger projections run` on one database, under the load generator.
Every delivery answered 200 is in the log once (a third of them were sent to
both APIs, as Stripe's retries would be), every receipt is settled exactly once,
and every projection reaches the head of the log; bounded in deliveries and time."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.domain.receipt import Receipt
from ledger.opening import open_ledger
from scripts.dev import loadgen
from tests.conftest import WEBHOOK_SECRET, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.alone]

DELIVERIES = 1500
SETTLE_WITHIN = 90.0  # seconds, after the last answer
# Six processes on one server of 100 connections (and the other test process's
# beside them): three a pool, as the README's "Connections" advises.
POOLS = {"LEDGER_DB_POOL_SIZE": "3"}
SPLIT = {"LEDGER_PROCESSOR": "off", "LEDGER_PROJECTIONS": "off", **POOLS}


def lag(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/audit/projections",
        headers={"Authorization": "Bearer adm_loadgen"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        return max(p["lag"] for p in json.load(answer))


def test_two_of_each_process_lose_nothing_and_apply_nothing_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    deliveries = loadgen.build_deliveries(DELIVERIES, prefix="scale")
    retried = deliveries[::3]
    processes = []
    try:
        apis = [
            loadgen.start_server(
                postgres_url, env_extra=SPLIT, secret=WEBHOOK_SECRET, log_path=tmp_path / f"api{i}"
            )
            for i in range(2)
        ]
        processes += apis
        for i in range(2):
            for start, name in ((loadgen.start_processor, "two"), (loadgen.start_projections, "p")):
                processes.append(start(postgres_url, POOLS, log_path=tmp_path / f"{name}{i}"))

        async def load() -> list[loadgen.LoadResult]:
            halves = (deliveries[0::2] + retried, deliveries[1::2] + retried)
            return list(
                await asyncio.gather(
                    *(
                        loadgen.run_load(
                            loadgen.build_requests(half, api.port, WEBHOOK_SECRET),
                            api.port,
                            concurrency=8,
                            time_limit=60.0,
                        )
                        for half, api in zip(halves, apis, strict=True)
                    )
                )
            )

        started = time.perf_counter()
        results = asyncio.run(load())
        answered = time.perf_counter() - started
        summaries = [r.summary() for r in results]
        assert all(s["by_status"] == {"200": s["sent"]} for s in summaries), summaries
        assert sum(r.summary()["sent"] for r in results) == DELIVERIES + 2 * len(retried)
        print(f"ingest through two API processes: {DELIVERIES / answered:,.0f} deliveries/s")

        ledger = open_ledger(make_settings(postgres_url))
        try:
            received = [
                n for n in ledger.recorder.select_notifications(start=1, limit=100_000)
                if n.topic == get_topic(Receipt.Received)
            ]  # fmt: skip
            deadline = time.monotonic() + SETTLE_WITHIN
            while time.monotonic() < deadline:
                settled = ledger.recorder.max_tracking_id("Ledger") or 0
                if settled >= received[-1].id and lag(apis[0].port) == 0:
                    break
                time.sleep(0.2)
            assert (ledger.recorder.max_tracking_id("Ledger") or 0) >= received[-1].id
            assert lag(apis[0].port) == 0
            log = ledger.recorder.select_notifications(start=1, limit=1_000_000)
            processed = Counter(
                n.originator_id for n in log if n.topic == get_topic(Receipt.Processed)
            )
        finally:
            ledger.close()
        ids = [n.originator_id for n in received]
        assert len(ids) == len(set(ids)) == DELIVERIES  # nothing lost, nothing twice
        assert {Receipt.create_id(e) for e, _ in deliveries} == set(ids)
        assert set(processed) == set(ids) and set(processed.values()) == {1}  # settled once each
        dead = [(p.log_path.name, p.returncode, p.log_tail()) for p in processes if not p.alive()]
        assert not dead, dead
    finally:
        for process in processes:
            process.stop()
