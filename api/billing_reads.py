"""Billing API v1, the reads: a user's invoices, entitlements and the gate (of a
feature, or of a metric's usage: one route), and notifications (a page, or a
Server-Sent Events stream). The queries and rules live in projections/,
ledger/domain/gate.py and ledger/usage.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import answers, bodies, usage
from api.contract import USER, Endpoint, reply
from api.errors import BadRequest
from ledger.domain.gate import UnknownFeature
from projections.fanout import Overflowed
from projections.invoice_history import UnknownInvoice
from projections.read_side import ReadSide

# --- answers -------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Invoice(_Answer):
    model_config = ConfigDict(extra="ignore", frozen=True)  # built from the projection's row

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
    """The feature gate's yes."""

    allowed: Literal[True] = True


class Refused(_Answer):
    """The feature gate's no, answered with 402."""

    allowed: Literal[False] = False
    reason: Literal["not_in_plan", "inactive", "grace_ended"]
    upgrade_to: str | None = Field(description="the cheapest plan that has the feature")


class Notification(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # plus the kind's own details

    cursor: int
    kind: str = Field(
        description="activated, renewed, payment_failed, payment_grace_ending, "
        "payment_recovered, trial_ending, cancellation_scheduled, cancellation_withdrawn, "
        "ended, plan_changed, features_granted, features_revoked, usage_warning, "
        "usage_limit_reached"
    )
    at: int
    subscription_id: str | None = Field(description="Stripe's; none for a usage alert")


class NotificationPage(_Answer):
    data: list[Notification]
    next: int


# --- handlers ------------------------------------------------------------------------


def _read(request: Request) -> ReadSide:
    return request.state.read


async def invoices(request: Request) -> Response:
    """The caller's invoices, newest first, a page at a time (`starting_after`: the
    last id of the previous page)."""
    q: bodies.InvoiceQuery = request.state.query
    rows, has_more = await run_in_threadpool(
        _read(request).invoice_page, request.state.user_id, q.limit, q.starting_after
    )
    return reply(InvoicePage(data=[Invoice.model_validate(r) for r in rows], has_more=has_more))


async def entitlements(request: Request) -> Response:
    """The caller's tier, plan, features and limits now (the free plan's without an
    active subscription)."""
    granted = await _read(request).entitlement_async(request.state.user_id)
    return reply(
        Entitlements(
            tier=granted.tier,
            plan_id=granted.plan_id,
            active=granted.active,
            features=list(granted.features),
            limits=dict(granted.limits),
            in_grace_until=granted.in_grace_until,
        )
    )


async def check(request: Request) -> Response:
    """The gate, on the hot path of every premium action. `feature`: may the caller
    use it now (memory, else one indexed read of the projections; never Stripe,
    never the log). `metric` (and `quantity`): may the caller use that much more of
    it now (the usage_totals projection). Exactly one of `feature` and `metric`.
    200 allowed, 402 refused: both are answers."""
    q: bodies.EntitlementCheckQuery = request.state.query  # exactly one: see the model
    if q.metric is not None:
        return await usage.check_metric(request, q.metric, q.quantity)
    verdict = await _read(request).check_async(request.state.user_id, q.feature or "")
    if verdict.allowed:
        return reply(Allowed())
    return reply(
        Refused(reason=verdict.reason, upgrade_to=verdict.upgrade_to),  # type: ignore[arg-type]
        402,
    )


def _notification(row: dict[str, Any]) -> Notification:
    return Notification(
        **row["detail"],
        cursor=row["cursor"],
        kind=row["kind"],
        at=row["occurred_at"],
        subscription_id=row["stripe_subscription_id"],
    )


async def notifications(request: Request) -> Response:
    """The caller's notifications after a cursor, in cursor order (`next`: the
    cursor to ask after for the next page)."""
    q: bodies.NotificationQuery = request.state.query
    rows = await run_in_threadpool(
        _read(request).notifications, request.state.user_id, q.after, q.limit
    )
    data = [_notification(r) for r in rows]
    return reply(NotificationPage(data=data, next=data[-1].cursor if data else q.after))


async def notification_stream(request: Request) -> Response:
    """Server-Sent Events: `id:` the cursor, `event:` the kind, `data:` the
    notification as JSON (a Notification); the `Last-Event-ID` header (or ?after=)
    resumes after a cursor; a comment line every LEDGER_SSE_HEARTBEAT seconds. The
    stream does not end by itself."""
    user_id = request.state.user_id
    q: bodies.StreamQuery = request.state.query
    header = request.headers.get("last-event-id")
    if header is not None and (not header.isdigit() or len(header) > 18):
        raise BadRequest("Last-Event-ID: a cursor (a non-negative integer) is expected")
    resume = int(header) if header is not None else (q.after or 0)
    read = _read(request)
    heartbeat = request.state.settings.sse_heartbeat_seconds

    async def events() -> AsyncIterator[str]:
        sent = resume
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
        events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


def _event(row: dict[str, Any]) -> str:
    body = _notification(row).model_dump_json()
    return f"id: {row['cursor']}\nevent: {row['kind']}\ndata: {body}\n\n"


B = "/api/v1/billing"

ENDPOINTS = [
    Endpoint(
        "GET", f"{B}/invoices", invoices, "The caller's invoices", security=USER,
        query=bodies.InvoiceQuery, answers={200: InvoicePage}, errors=(UnknownInvoice,),
        tags=["billing"],
    ),
    Endpoint(
        "GET", f"{B}/entitlements", entitlements, "The caller's entitlements",
        security=USER, answers={200: Entitlements}, tags=["billing"],
    ),
    Endpoint(
        "GET", f"{B}/entitlements/check", check,
        "Whether the caller may use a feature, or more of a metric", security=USER,
        query=bodies.EntitlementCheckQuery,
        answers={200: (Allowed, answers.UsageAllowed), 402: (Refused, answers.UsageLimitReached)},
        errors=(UnknownFeature, BadRequest), tags=["billing", "usage"],
    ),
    Endpoint(
        "GET", f"{B}/notifications", notifications, "The caller's notifications",
        security=USER, query=bodies.NotificationQuery, answers={200: NotificationPage},
        tags=["billing"],
    ),
    Endpoint(
        "GET", f"{B}/notifications/stream", notification_stream,
        "The caller's notifications as they happen (Server-Sent Events)", security=USER,
        query=bodies.StreamQuery, answers={200: "text/event-stream"}, errors=(BadRequest,),
        tags=["billing"],
    ),
]  # fmt: skip
