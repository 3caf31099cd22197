"""Rate limiting per user id and per client address on /api/ (pure ASGI
middleware, sliding windows from the `limits` library): 429 with Retry-After."""

from __future__ import annotations

import json
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send


class RateLimit:
    def __init__(
        self, app: ASGIApp, per_user: str, per_address: str, prefix: str = "/api/"
    ) -> None:
        self.app = app
        self.prefix = prefix
        try:
            self.per_user: RateLimitItem = parse(per_user)
            self.per_address: RateLimitItem = parse(per_address)
        except ValueError as exc:
            raise ValueError(f"bad rate limit ({per_user!r}, {per_address!r}): {exc}") from None
        # O(1) per hit and per key, whatever the limit (a moving window keeps every hit)
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        checks = [(self.per_address, f"address:{address}")]
        for name, value in scope["headers"]:
            if name == b"x-user-id":
                checks.append((self.per_user, "user:" + value[:64].decode("latin-1")))
                break
        for limit, key in checks:
            if not self.limiter.hit(limit, key):
                reset = self.limiter.get_window_stats(limit, key).reset_time
                await _too_many(send, max(1, math.ceil(reset - time.time())))
                return
        await self.app(scope, receive, send)


async def _too_many(send: Send, retry_after: int) -> None:
    body = json.dumps(
        {"error": "too many requests; slow down", "error_code": "rate_limited"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
