"""Rate limits (sliding windows from the `limits` library), all answering 429 with
Retry-After: per client address on /api/ (pure ASGI middleware, before anything
else); and, counted where the outcome is known, per user for requests whose token
was valid, per address for failed authentications and for registrations (`Limits`).
A request with someone else's user id and a wrong token is counted against its
sender's address, never against that user."""

from __future__ import annotations

import json
import math
import threading
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import RateLimited


class _Memory(MemoryStorage):
    """The library's in-memory storage, swept by one long-lived thread once a
    second. limits 5.x starts a new Timer thread from a hit whenever the previous
    one has run (every 10 ms under load): a thread start, and a wait for it, on the
    event loop's hot path (15% of the loop's time in a profile of 2,000 reads/s).
    The library's own sweep then looks at every key in one go, holding the GIL for
    milliseconds with 10,000 users' counters: a stall of every request once a
    second, the p99 of a paced run. Here the sweep goes `CHUNK` keys at a time and
    lets the event loop run in between. Counters also expire when read, so the
    sweep only frees memory. Overrides the library's private hook: pyproject.toml
    bounds `limits` below 6."""

    SWEEP_SECONDS = 1.0
    CHUNK = 256

    def __init__(self) -> None:
        super().__init__()
        threading.Thread(target=self._sweep, name="rate-limit-sweep", daemon=True).start()

    def _MemoryStorage__schedule_expiry(self) -> None:
        pass  # the sweep thread expires

    def _sweep(self) -> None:
        while True:
            time.sleep(self.SWEEP_SECONDS)
            self.expire()

    def expire(self) -> int:
        """Drop the counters that have expired (what the library's sweep does for
        the fixed and sliding windows used here); returns how many."""
        keys = list(self.expirations)
        dropped = 0
        for start in range(0, len(keys), self.CHUNK):
            now = time.time()
            for key in keys[start : start + self.CHUNK]:
                if self.expirations.get(key, math.inf) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)
                    dropped += 1
            time.sleep(0)  # the event loop's turn
        return dropped


def _parse(name: str, value: str) -> RateLimitItem:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"bad rate limit {name}={value!r}: {exc}") from None


class Limits:
    """The limits counted after a request is understood (see `api.auth.caller`)."""

    def __init__(self, per_user: str, failed_auth: str, registration: str) -> None:
        self.per_user = _parse("per_user", per_user)
        self.failed_auth = _parse("failed_auth", failed_auth)
        self.registration = _parse("registration", registration)
        # O(1) per hit and per key, whatever the limit (a moving window keeps every hit)
        self.limiter = SlidingWindowCounterRateLimiter(_Memory())

    def hit(self, limit: RateLimitItem, key: str, what: str) -> None:
        """Count one; raise RateLimited when over `limit`."""
        if not self.limiter.hit(limit, key):
            reset = self.limiter.get_window_stats(limit, key).reset_time
            raise RateLimited(f"too many {what}; slow down", max(1, math.ceil(reset - time.time())))

    def user(self, user_id: str) -> None:
        self.hit(self.per_user, f"user:{user_id}", "requests")

    def failed_authentication(self, address: str) -> None:
        self.hit(self.failed_auth, f"failed:{address}", "failed authentications")

    def registering(self, address: str) -> None:
        self.hit(self.registration, f"register:{address}", "registrations")


class RateLimit:
    """Per client address on /api/, before anything is read or authenticated."""

    def __init__(self, app: ASGIApp, per_address: str, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix
        self.per_address = _parse("per_address", per_address)
        self.limiter = SlidingWindowCounterRateLimiter(_Memory())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        key = f"address:{client_address(scope)}"
        if not self.limiter.hit(self.per_address, key):
            reset = self.limiter.get_window_stats(self.per_address, key).reset_time
            await _too_many(send, max(1, math.ceil(reset - time.time())))
            return
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """The client's address as uvicorn gives it (behind a trusted proxy, with
    --proxy-headers, the one X-Forwarded-For names)."""
    return (scope.get("client") or ("unknown", 0))[0]


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
