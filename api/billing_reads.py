"""Billing API v1, the reads: a user's invoices, entitlements and the feature gate,
and notifications (a page, or a Server-Sent Events stream). Answers are pydantic
models; the queries and rules live in projections/ and ledger/domain/gate.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.auth import caller
from api.errors import BadRequest
from projections.fanout import Overflowed
from projections.read_side import ReadSide

Q = TypeVar("Q", bound=BaseModel)


# --- answers -------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class Invoice(_Answer):
    id: str
    number: str | None
    status: str
    amount_due: int = Field(description="minor units")
    amount_paid: int = Field(description="minor units")
    currency: str
    period_start: int | None
    period_end: int | None
    paid_at: int | None
    hosted_invoice_url: str | None


class InvoicePage(_Answer):
    data: list[Invoice]
    has_more: bool


class Entitlements(_Answer):
    tier: str
    plan_id: str
    active: bool
    features: list[str]
    limits: dict[str, int]
    in_grace_until: int | None


class Allowed(_Answer):
    allowed: bool = True


class Refused(_Answer):
    """Answered with 402."""

    allowed: bool = False
    reason: str = Field(description="not_in_plan | inactive | grace_ended")
    upgrade_to: str | None


class Notification(_Answer):
    model_config = ConfigDict(frozen=True, extra="allow")  # plus the kind's own details

    cursor: int
    kind: str
    at: int
    subscription_id: str


class NotificationPage(_Answer):
    data: list[Notification]
    next: int


# --- queries -------------------------------------------------------------------------


class InvoiceQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    starting_after: str | None = Field(None, max_length=255)


class CheckQuery(BaseModel):
    feature: str = Field(min_length=1, max_length=100)


class NotificationQuery(BaseModel):
    after: int = Field(0, ge=0, le=2**62)
    limit: int = Field(50, ge=1, le=500)


def _query(request: Request, model: type[Q]) -> Q:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "query"
        raise BadRequest(f"{where}: {first['msg']}") from None


def _read(request: Request) -> ReadSide:
    return request.state.read


def _json(answer: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(answer.model_dump(mode="json"), status)


# --- handlers ------------------------------------------------------------------------


async def invoices(request: Request) -> JSONResponse:
    user_id = await caller(request)
    q = _query(request, InvoiceQuery)
    rows, has_more = await run_in_threadpool(
        _read(request).invoice_page, user_id, q.limit, q.starting_after
    )
    return _json(InvoicePage(data=[Invoice.model_validate(r) for r in rows], has_more=has_more))


async def entitlements(request: Request) -> JSONResponse:
    granted = await _read(request).entitlement_async(await caller(request))
    return _json(
        Entitlements(
            tier=granted.tier,
            plan_id=granted.plan_id,
            active=granted.active,
            features=list(granted.features),
            limits=dict(granted.limits),
            in_grace_until=granted.in_grace_until,
        )
    )


async def check(request: Request) -> JSONResponse:
    """The gate, on the hot path of every premium action: memory, else one indexed
    read of the projection; never Stripe, never the log. (Other forms of the
    question, e.g. a usage quantity, are further branches here.)"""
    user_id = await caller(request)
    q = _query(request, CheckQuery)
    verdict = await _read(request).check_async(user_id, q.feature)
    if verdict.allowed:
        return _json(Allowed())
    return _json(Refused(reason=verdict.reason or "", upgrade_to=verdict.upgrade_to), 402)


def _notification(row: dict[str, Any]) -> Notification:
    return Notification(
        **row["detail"],
        cursor=row["cursor"],
        kind=row["kind"],
        at=row["occurred_at"],
        subscription_id=row["stripe_subscription_id"],
    )


async def notifications(request: Request) -> JSONResponse:
    user_id = await caller(request)
    q = _query(request, NotificationQuery)
    rows = await run_in_threadpool(_read(request).notifications, user_id, q.after, q.limit)
    data = [_notification(r) for r in rows]
    return _json(NotificationPage(data=data, next=data[-1].cursor if data else q.after))


async def notification_stream(request: Request) -> Response:
    """Server-Sent Events: `id:` the cursor, `event:` the kind, `data:` the
    notification as JSON; `Last-Event-ID` (or ?after=) resumes after a cursor; a
    comment line every LEDGER_SSE_HEARTBEAT seconds."""
    user_id = await caller(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not resume.isdigit() or len(resume) > 18:
        raise BadRequest("Last-Event-ID: a cursor (a non-negative integer) is expected")
    read = _read(request)
    heartbeat = request.state.settings.sse_heartbeat_seconds

    async def events() -> AsyncIterator[str]:
        sent = int(resume)
        # Subscribe first, then read what is stored: nothing falls between the two,
        # and what both hold is sent once (by cursor).
        stream = read.fanout.subscribe(user_id)
        try:
            yield ": stream open\n\n"
            while True:  # the stored backlog, page by page
                rows = await run_in_threadpool(read.notifications, user_id, sent, 500)
                for row in rows:
                    yield _event(row)
                    sent = row["cursor"]
                if len(rows) < 500:
                    break
            while True:
                row = await stream.next(heartbeat)
                if row is None:
                    yield ": heartbeat\n\n"
                elif row["cursor"] > sent:
                    yield _event(row)
                    sent = row["cursor"]
        except Overflowed:
            return  # the client reconnects with Last-Event-ID and misses nothing
        finally:
            stream.close()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(row: dict[str, Any]) -> str:
    body = _notification(row).model_dump_json()
    return f"id: {row['cursor']}\nevent: {row['kind']}\ndata: {body}\n\n"
