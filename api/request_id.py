"""Every request has a request id: the caller's own `X-Request-ID` when it is
well formed (1 to 64 of A-Z a-z 0-9 . _ -), else one made here (`req_` and 24 hex
digits). Every answer names it in `Request-Id` (refusals and 429s too; the 500
handler adds it as well), and the events an API call records carry it (handlers
pass `request_id(request)` to the ledger's services), so an auditor can tell which
call recorded what.

Pure ASGI middleware, the outermost (before the webhook shortcut): per request, one
look through the headers and one header added to the answer's start."""

from __future__ import annotations

import itertools
import re
import secrets

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "Request-Id"
PATTERN = r"[A-Za-z0-9._-]{1,64}"
_WELL_FORMED = re.compile(PATTERN.encode())
_INCOMING = b"x-request-id"
_OUTGOING = HEADER.lower().encode()


_PROCESS = secrets.token_hex(6)  # this process's 12 hex digits: ids differ across processes
_COUNT = itertools.count(1)


def new_request_id() -> str:
    """`req_`, this process's random prefix and a counter (12 hex digits each):
    unique without asking the kernel for randomness on every request."""
    return f"req_{_PROCESS}{next(_COUNT) & 0xFFFFFFFFFFFF:012x}"


def given_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-ID (the first, if several), if well formed."""
    for name, value in headers:
        if name == _INCOMING:
            return value.decode("ascii") if _WELL_FORMED.fullmatch(value) else None
    return None


def request_id(request: Request) -> str | None:
    """This request's id (None only for an app built without `RequestId`)."""
    return request.scope.get("state", {}).get("request_id")


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = given_request_id(scope["headers"]) or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid  # request.state.request_id
        header = (_OUTGOING, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":  # a new list: the sender's is its own
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
