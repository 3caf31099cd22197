"""Prometheus metrics: the API process's own counters, and what operators alert
on, read from the projections at scrape time (receipts by outcome, projection
lag)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from eventsourcing.persistence import PersistenceError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from projections.read_side import ReadSide

WEBHOOKS = Counter(
    "ledger_webhook_deliveries",
    "Stripe deliveries received, by result",
    ["result"],  # recorded, duplicate, or the refusal's error_code (invalid_signature, ...)
)


class ReadModelGauges(Collector):
    """Sampled once per scrape; absent when the store does not answer in time
    (alert on `absent(ledger_receipts)` as well)."""

    def __init__(
        self,
        receipts: dict[str, int],
        lags: dict[str, int],
        reconcile: dict[str, Any] | None = None,
    ) -> None:
        self.receipts, self.lags = receipts, lags
        self.reconcile = reconcile or {"drift_total": {}, "last_run": None}

    @classmethod
    def sample(cls, read: ReadSide) -> ReadModelGauges:
        lags = {p["name"]: p["lag"] for p in read.positions()}
        return cls(read.receipt_outcomes(), lags, read.reconcile_figures())

    def collect(self) -> Iterator[Metric]:
        receipts = GaugeMetricFamily(
            "ledger_receipts",
            "Recorded Stripe deliveries by outcome, as the webhook_health projection "
            'holds them; outcome="dead" waits for an operator',
            labels=["outcome"],
        )
        for outcome, count in self.receipts.items():
            receipts.add_metric([outcome], count)
        lag = GaugeMetricFamily(
            "ledger_projection_lag_events",
            "Log events not yet applied, per projection",
            labels=["projection"],
        )
        for name, events in self.lags.items():
            lag.add_metric([name], events)
        yield from (receipts, lag)
        yield from reconcile_metrics(self.reconcile)


def reconcile_metrics(figures: dict[str, Any]) -> Iterator[Metric]:
    """`ledger reconcile` runs in a process of its own: each run is recorded as an
    event, and these are read from the `reconciliations` projection."""
    drift = CounterMetricFamily(
        "ledger_reconcile_drift",
        "Differences from Stripe found by `ledger reconcile`, over every run, by field",
        labels=["field"],
    )
    for field, found in figures["drift_total"].items():
        drift.add_metric([field], found)
    yield drift
    last = figures["last_run"]
    if last is not None:
        yield GaugeMetricFamily(
            "ledger_reconcile_last_run_timestamp_seconds",
            "When the last `ledger reconcile` run finished (unix time)",
            value=last["finished_at"],
        )
        yield GaugeMetricFamily(
            "ledger_reconcile_last_run_drift",
            "Differences from Stripe the last run found (0: in step)",
            value=last["drift"],
        )


async def metrics(request: Request) -> Response:
    text = generate_latest()
    try:
        gauges = await asyncio.wait_for(
            run_in_threadpool(ReadModelGauges.sample, request.state.read), 2
        )
    except (PersistenceError, TimeoutError):
        pass  # the process's own counters still answer
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(gauges)
        text += generate_latest(registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
