"""CORS as Starlette does it, with a short way for a request that names no Origin
(every server-to-server call and every benchmark): Starlette builds a header view
for every request and another for every answer; here such an answer only gains
`Vary: Origin`, as Starlette's would."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

_ORIGIN = b"origin"
_VARY = b"vary"


class Cors(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == _ORIGIN for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def send_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = vary_origin(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_vary)


def vary_origin(headers: object) -> list[tuple[bytes, bytes]]:
    """The answer's headers (a new list) with `Origin` joined to its `Vary`."""
    raw = list(headers)  # type: ignore[call-overload]
    varies = [value for name, value in raw if name == _VARY]
    if varies:
        raw = [h for h in raw if h[0] != _VARY]
    raw.append((_VARY, b", ".join([*varies, b"Origin"])))
    return raw
