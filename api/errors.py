"""One map from domain errors to HTTP answers, all shaped {"error", "error_code"}."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from ledger.intake import InvalidSignature, StoreUnavailable
from ledger.stripe_payloads import NotAnEvent

log = logging.getLogger("api")


class PayloadTooLarge(ValueError):
    pass


class Unauthorized(PermissionError):
    pass


class BadRequest(ValueError):
    pass


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "error_code": code}, status, headers=headers)


# exception class -> (status, error_code, message; None means the exception's own text)
ERRORS: dict[type[Exception], tuple[int, str, str | None]] = {
    InvalidSignature: (400, "invalid_signature", None),
    NotAnEvent: (400, "not_an_event", None),
    PayloadTooLarge: (413, "payload_too_large", None),
    BadRequest: (400, "bad_request", None),
    Unauthorized: (401, "unauthorized", None),
    StoreUnavailable: (503, "store_unavailable", "the ledger cannot record this now; retry later"),
}


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, code, message = ERRORS[type(exc)]
    headers = {"Retry-After": "5"} if status == 503 else None
    return error(status, code, message or str(exc), headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc
    )
    return error(500, "internal_error", "internal error")


def exception_handlers() -> dict[type[Exception] | int, object]:
    handlers: dict[type[Exception] | int, object] = dict.fromkeys(ERRORS, domain_error)
    handlers[Exception] = server_error
    return handlers
