"""A `stripe` library HTTP client that records each request and answers from a
queue: the library still builds the real requests (form encoding, headers,
idempotency keys) and runs its own retry loop, so what a test asserts is what
Stripe would receive. Nothing opens a connection."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe
from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class Recorded:
    method: str
    url: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    stripe_version: str | None
    authorization: str | None


class RecordingTransport(stripe.HTTPClient):
    """Answers queued (status, JSON, headers) or raises queued exceptions, in order."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.sleeps: list[float] = []
        self._answers: deque[tuple[int, Any, dict[str, str]] | Exception] = deque()

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._answers.append((status, body, headers or {}))

    def fail(self, error: Exception) -> None:
        self._answers.append(error)

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        parts = urlsplit(url)
        pairs = parse_qsl(post_data or parts.query, keep_blank_values=True)
        params = dict(pairs)
        assert len(params) == len(pairs), f"repeated parameter in {pairs}"
        self.requests.append(
            Recorded(
                method=method,
                url=url,
                path=parts.path,
                params=params,
                idempotency_key=headers.get("Idempotency-Key"),
                stripe_version=headers.get("Stripe-Version"),
                authorization=headers.get("Authorization"),
            )
        )
        assert self._answers, f"unexpected request {method} {url}"
        answer = self._answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        status, body, extra = answer
        rheaders = CaseInsensitiveDict({"request-id": f"req_{len(self.requests)}", **extra})
        return json.dumps(body), status, rheaders

    def _sleep_time_seconds(self, num_retries: int) -> float:
        # Record the library's own back-off, but do not actually wait.
        self.sleeps.append(super()._sleep_time_seconds(num_retries))
        return 0.0

    def close(self) -> None:
        pass
