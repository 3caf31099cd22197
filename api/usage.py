"""Usage metering: record usage (one, or a batch of up to 1,000), read a period's
totals, and the gate that answers whether a user may use more of a metric."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import answers, bodies
from api.contract import USER, Endpoint, reply, reply_built
from api.errors import BadRequest
from ledger import usage
from ledger.intake import StoreUnavailable
from ledger.usage import Metering
from projections.read_side import ReadSide


def _metering(request: Request) -> Metering:
    return request.state.metering


def _read(request: Request) -> ReadSide:
    return request.state.read


async def record(request: Request) -> Response:
    """Record usage once per idempotency key: 201, or 200 with the first record for a
    key recorded before. Never refused for being over a limit (the gate is)."""
    body: bodies.UsageRecordBody = request.state.body
    answer = await _metering(request).record(request.state.user_id, body)
    recorded = answers.UsageRecorded.model_validate(answer)
    return reply(recorded, 200 if recorded.duplicate else 201)


async def record_batch(request: Request) -> Response:
    """Record 1 to 1,000 records (at most 256 KiB), all or none, in one transaction."""
    body: bodies.UsageBatch = request.state.body
    records = await _metering(request).record_batch(request.state.user_id, body.records)
    duplicates = sum(1 for r in records if r["duplicate"])
    # answers.UsageBatchRecorded, as built (test_usage_api holds it to the model)
    return reply_built(
        {"recorded": len(records) - duplicates, "duplicates": duplicates, "records": records}
    )


async def totals(request: Request) -> Response:
    """The caller's usage in the billing period holding `at` (now by default): per
    metric the total, the included amount, what remains and the overage so far."""
    query: bodies.UsageQuery = request.state.query
    found = await run_in_threadpool(_read(request).usage, request.state.user_id, query.moment())
    return reply(answers.UsageTotals.model_validate(found))


async def check_metric(request: Request, name: str, quantity: int) -> Response:
    """Whether the caller may use `quantity` more of the metric `name` now: 402 past a
    hard limit, 200 otherwise (past a soft one, as overage); reads the usage_totals
    projection only. One branch of GET /api/v1/billing/entitlements/check
    (api/billing_reads.py declares the route)."""
    read = _read(request)
    metric = read.catalog.metric(name)
    if metric is None:
        raise BadRequest(f"query metric: unknown metric {name!r}")
    if quantity > metric.max_quantity:
        raise BadRequest(f"query quantity: must be a whole number from 0 to {metric.max_quantity}")
    user_id = request.state.user_id
    answer = await read.usage_check_async(user_id, metric, quantity)
    if answer["allowed"]:
        return reply(answers.UsageAllowed.model_validate(answer))
    return reply(answers.UsageLimitReached.model_validate(answer), 402)


ENDPOINTS = [
    Endpoint(
        "POST", "/api/v1/billing/usage", record, "Record usage", security=USER,
        body=bodies.UsageRecordBody,
        answers={201: answers.UsageRecorded, 200: answers.UsageRecorded},
        errors=(usage.InvalidUsage, StoreUnavailable), tags=["usage"],
    ),
    Endpoint(
        "POST", "/api/v1/billing/usage/batch", record_batch, "Record a batch of usage",
        security=USER, body=bodies.UsageBatch, max_body=bodies.USAGE_BATCH_MAX_BODY,
        answers={200: answers.UsageBatchRecorded},
        errors=(usage.InvalidUsage, StoreUnavailable), tags=["usage"],
    ),
    Endpoint(
        "GET", "/api/v1/billing/usage", totals, "The caller's usage in a billing period",
        security=USER, query=bodies.UsageQuery, answers={200: answers.UsageTotals},
        tags=["usage"],
    ),
]  # fmt: skip
