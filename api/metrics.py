"""Prometheus metrics: the API process's own counters, and what operators alert
on, read from the projections at scrape time (receipts by outcome, projection
lag)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from eventsourcing.persistence import PersistenceError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
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

    def __init__(self, receipts: dict[str, int], lags: dict[str, int]) -> None:
        self.receipts, self.lags = receipts, lags

    @classmethod
    def sample(cls, read: ReadSide) -> ReadModelGauges:
        lags = {p["name"]: p["lag"] for p in read.positions()}
        return cls(read.receipt_outcomes(), lags)

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
