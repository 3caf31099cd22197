"""Usage metering: record usage (one, or a batch of up to 1,000), read a period's
totals, and the gate that answers whether a user may use more of a metric."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import bodies
from api.auth import caller
from api.errors import BadRequest
from ledger.usage import Metering, UsageRequest
from projections.read_side import ReadSide


def _metering(request: Request) -> Metering:
    return request.state.metering


def _read(request: Request) -> ReadSide:
    return request.state.read


def _request(body: bodies.UsageRecordBody) -> UsageRequest:
    return UsageRequest(body.metric, body.quantity, body.idempotency_key, body.occurred_at)


async def record(request: Request) -> JSONResponse:
    """POST /api/v1/billing/usage"""
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.UsageRecordBody)
    answer = await _metering(request).record(user_id, _request(body))
    return JSONResponse(answer, status_code=200 if answer["duplicate"] else 201)


async def record_batch(request: Request) -> JSONResponse:
    """POST /api/v1/billing/usage/batch"""
    user_id = await caller(request)
    body = await bodies.parse(request, bodies.UsageBatch, max_body=bodies.USAGE_BATCH_MAX_BODY)
    answers = await _metering(request).record_batch(user_id, [_request(r) for r in body.records])
    return JSONResponse(
        {
            "recorded": sum(not a["duplicate"] for a in answers),
            "duplicates": sum(bool(a["duplicate"]) for a in answers),
            "records": answers,
        }
    )


async def totals(request: Request) -> JSONResponse:
    """GET /api/v1/billing/usage[?at=YYYY-MM-DD]"""
    user_id = await caller(request)
    at = request.query_params.get("at")
    when = None
    if at is not None:
        try:
            when = datetime.strptime(at, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise BadRequest("at: expected a day, YYYY-MM-DD") from None
    return JSONResponse(await run_in_threadpool(_read(request).usage, user_id, when))


async def check(request: Request) -> JSONResponse:
    """GET /api/v1/billing/entitlements/check?metric=...&quantity=...: 402 past a
    hard limit; reads the usage_totals projection only."""
    user_id = await caller(request)
    read = _read(request)
    name = request.query_params.get("metric", "")
    metric = read.catalog.metric(name)
    if metric is None:
        raise BadRequest(f"metric: unknown metric {name!r}")
    raw = request.query_params.get("quantity", "1")
    if not raw.isdigit() or not 0 <= int(raw) <= metric.max_quantity:
        raise BadRequest(f"quantity: must be a whole number from 0 to {metric.max_quantity}")
    answer = await run_in_threadpool(read.usage_check, user_id, metric, int(raw))
    return JSONResponse(answer, status_code=200 if answer["allowed"] else 402)
