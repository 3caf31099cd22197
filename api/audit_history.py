"""The auditors' history (admin token, checked by the route's contract): the
log's events, one Stripe delivery byte for byte, a user's API actions, the seal's
head, and the erasure of a user's personal data."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import bodies
from api.contract import ADMIN, Endpoint, reply
from api.request_id import request_id
from ledger.application import ReceiptNotFound
from ledger.personal import Erased
from projections.history import ActionsPage, ErasureAnswer, History, HistoryPage, delivered
from projections.read_side import ReadSide
from projections.seal import SealHead


def _history(request: Request) -> History:
    read: ReadSide = request.state.read
    return History(request.state.ledger, read.owners)


async def events(request: Request) -> Response:
    """The log's domain events in log order (all, or one user's), each in our words
    with what caused it; personal values as they were, or "[erased]". Page with
    `after`: the answer's `next`."""
    query: bodies.AuditEventsQuery = request.state.query
    history = _history(request)
    page = await run_in_threadpool(history.page, query.user_id, query.after, query.limit)
    return reply(page)


async def delivery(request: Request) -> Response:
    """A Stripe delivery's body exactly as received (the bytes Stripe signed), with
    what became of it in the Ledger-* headers. 410 once its customer was erased."""
    path: bodies.DeliveryPath = request.state.path
    found = await run_in_threadpool(delivered, request.state.ledger, path.stripe_event_id)
    return Response(found.body, media_type="application/json", headers=found.headers())


async def actions(request: Request) -> Response:
    """A user's API actions: what was asked, when, and what Stripe answered."""
    history = _history(request)
    page = await run_in_threadpool(history.actions, request.path_params["user_id"])
    return reply(page)


async def erase(request: Request) -> Response:
    """Erase a user's personal data: the keys of its Stripe customers are deleted
    (crypto-shredding) and the erasure is recorded; statuses and amounts stay."""
    history = _history(request)
    erased = await run_in_threadpool(
        history.erase, request.path_params["user_id"], request_id=request_id(request)
    )
    return reply(erased)


async def seal(request: Request) -> Response:
    """The seal's head: the hash chain's last position and hash (record it outside
    the system), its lag behind the log, its last checkpoint."""
    read: ReadSide = request.state.read
    return reply(await run_in_threadpool(read.seal.head))


LEDGER_HEADERS = {
    "Ledger-Received-At": "when stage one recorded it (ISO 8601)",
    "Ledger-Signature-Time": "its Stripe-Signature's t= (empty when not kept)",
    "Ledger-Outcome": "received, applied, superseded, ignored, failed or dead",
    "Ledger-Attempts": "stage two's attempts so far",
    "Ledger-Last-Error": "the last attempt's error (ASCII), or empty",
}

ENDPOINTS = [
    Endpoint(
        "GET", "/api/v1/audit/events", events, "The log's events, in our words",
        security=ADMIN, query=bodies.AuditEventsQuery, answers={200: HistoryPage},
        tags=["audit"], private=True,
    ),
    Endpoint(
        "GET", "/api/v1/audit/deliveries/{stripe_event_id}", delivery,
        "A Stripe delivery, byte for byte", security=ADMIN, path_params=bodies.DeliveryPath,
        answers={200: "application/json"}, answer_headers=LEDGER_HEADERS,
        errors=(ReceiptNotFound, Erased), tags=["audit"], private=True,
    ),
    Endpoint(
        "GET", "/api/v1/audit/users/{user_id}/actions", actions, "A user's API actions",
        security=ADMIN, path_params=bodies.UserPath, answers={200: ActionsPage},
        tags=["audit"], private=True,
    ),
    Endpoint(
        "GET", "/api/v1/audit/seal", seal, "The seal's head", security=ADMIN,
        answers={200: SealHead}, tags=["audit"],
    ),
    Endpoint(
        "POST", "/api/v1/audit/users/{user_id}/erase", erase, "Erase a user's personal data",
        security=ADMIN, path_params=bodies.UserPath, answers={200: ErasureAnswer},
        tags=["audit"], private=True,
    ),
]  # fmt: skip
